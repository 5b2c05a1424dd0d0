"""Throwaway systemd hosts for tests and the demo (`dtenant lab`)."""
