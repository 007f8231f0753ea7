"""cityops.simulators"""
