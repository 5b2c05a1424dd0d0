"""Throwaway systemd hosts for tests and the demo (`python3 -m tests.lab`): a development
tool of the checkout, never shipped."""
