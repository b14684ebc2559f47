"""The byte path of photo replication: staged downloads verified by size and MD5 (staged.py), the engines that
fetch them (engine.py: urllib3; curl.py: pycurl), and the worker pool that feeds a store (pool.py)."""
