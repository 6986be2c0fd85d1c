"""The typing corpus is checked by mypy (test_typing.py), not imported: usage_bad.py
is wrong on purpose."""

collect_ignore = ["usage_ok.py", "usage_bad.py"]
