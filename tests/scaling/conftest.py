"""The scripts here set the device count before JAX starts: tests/test_scaling.py runs
them in subprocesses; pytest must not import them."""

collect_ignore = ["checkpoint_devices.py", "eight_devices.py", "multihost.py", "pmap_devices.py"]
