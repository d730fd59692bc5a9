"""How much memory a model needs and where it fits: pure, cited formulas and the devices they
are held against.
"""
