"""cityops.traffic"""
