"""cityops.roadworks"""
