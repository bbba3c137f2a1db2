"""The phone-number directory's number handling, now in sipim/phone.py.

Kept only while sipim/xdm/http.py (being rewritten as handlers) imports it from
here; new code imports sipim.phone.
"""

from sipim.phone import InvalidNumber, normalise_e164, number_of

__all__ = ["InvalidNumber", "normalise_e164", "number_of"]
