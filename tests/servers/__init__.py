"""Local stand-ins for the external services Meterline talks to, for tests."""
