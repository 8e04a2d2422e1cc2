"""forgeryloc: find where a photograph was manipulated, with M2SFormer."""
__version__ = "0.1.0"
