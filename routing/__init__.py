"""cityops.routing"""
