"""Test-session settings. BLAS threads are pinned to one before NumPy loads: on a 2-core machine
running several processes, multi-threaded OpenBLAS is many times slower for our small matrices."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
