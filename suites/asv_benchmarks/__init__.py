"""asv benchmarks (``asv run --python=same``). asv imports every module here, so modules
import nothing heavy at import time; names starting with ``time_``, ``track_``, ``mem_``
or ``peakmem_`` are benchmarks, so helpers never use those prefixes."""
