"""Numba kernels: private, typed arrays in, results written to arrays.

Every kernel has a slow pure-Python twin in tests/reference.py that the tests
compare it against. Readable wrappers live one level up in core/.
"""
