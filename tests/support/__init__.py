"""Real network peers for tests: a DNS server, an SMTP sink and throwaway certificates."""
