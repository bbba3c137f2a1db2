"""sipim: instant messaging over SIP."""
__version__ = "0.1.0"
