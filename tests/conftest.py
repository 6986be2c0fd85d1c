"""Test configuration shared by the suite."""

# The typing corpus is checked by mypy (test_typing.py), not imported: usage_bad.py
# is wrong on purpose.
collect_ignore = ["typing"]
