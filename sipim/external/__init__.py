"""sipim behind an external SIP/IP core (Kamailio): the IM server role alone.

The core authenticates, keeps the registrations and asserts identities; sipim
trusts only the core's addresses (``trust``), reads the sender from
P-Asserted-Identity (``proxy``), learns the devices from the core's
third-party REGISTERs (``registrations``) and sends deliveries back through
the core (``gateway``).  The IM role (sipim.im) is the same as in the
embedded deployment.
"""
