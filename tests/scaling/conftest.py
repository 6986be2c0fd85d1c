"""The scripts here set the device count before JAX starts: test_scaling.py beside them
runs them in subprocesses; pytest must not import them."""

collect_ignore = ["checkpoint_devices.py", "eight_devices.py", "multihost.py", "sharded_errors.py"]
