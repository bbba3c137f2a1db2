"""Device auto-configuration over HTTPS: one-time codes by SMS, the network-asserted
number, QR pairing, password sign-in -- each ending in per-device credentials and a
configuration document (see docs/internals.md)."""
