"""Distillation methods, one file each: TAR and the methods it is compared with.

base.py says what a method is; registry.py maps each name to its class (METHODS). Nothing is
imported here, so that a method file can import base.py without loading every other method.
"""
