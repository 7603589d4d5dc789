"""``shmring bench``: what a Ring costs next to the standard ways of moving
numpy arrays between processes.

Every measurement runs between processes forked from this one
(multiprocessing start method "fork"); none of them runs threads of its own
besides what the transport under test starts.  The sections of the report:

* **Copy floor.**  ``np.copyto`` into a preallocated array, one core, per
  item size: the bound any copying transport is measured against.
* **Throughput.**  One producer process sends uint8 arrays to one consumer
  process for a fixed time: Ring ``put``/``get``, ``put_many``/``get_many``
  and ``reserve``/``borrow``, then the peers ``multiprocessing.Queue``,
  ``multiprocessing.Pipe`` and a raw ``os.pipe``.
* **Many producers and consumers.**  2 and 4 producer processes send into
  one queue that as many consumer processes take from: the lock-free
  multi-producer/multi-consumer Ring against ``multiprocessing.Queue`` and
  ``faster_fifo.Queue`` (when installed: the ``bench`` extra).
* **Ping-pong.**  A sends a 64-byte array, B echoes it back, A times each
  round trip.
* **Idle CPU.**  The CPU time a consumer spends blocked in ``ring.get()``
  with a live producer that sends nothing: it should sleep, not spin.

The report ends with the CPU that other processes took during each section:
on a small machine, more than a few percent shows in the numbers.
``--json`` writes every figure with the machine it ran on (``machine``, see
machine.py); ``--plot`` draws the throughput section (plot.py, matplotlib:
the optional extra ``shmring[plot]``), also from a saved ``--from-json``.

Every message carries its sequence number (and, with many producers, its
producer), which every consumer checks on every message, so a lost,
duplicated, reordered, truncated or torn message fails the run (``main``
returns 1).  See docs/bench.md.

The modules, from the command line down:

========================  ==================================================================
``cli.py``                flags -> ``Settings``; ``main``; ``--json``, ``--plot``, ``--from-json``
``runner.py``             ``run``: header, every section in order, footer
``machine.py``            what a run ran on: CPU, cores, memory, versions, date, command, load
``plot.py``               ``--plot``: messages/s and GB/s against size (imports matplotlib)
``sections.py``           each section: what it measures, the table it prints
``report.py``             header, footer, number formats, ``Table``
``measurements.py``       how a cell is timed and checked, in forked children
``transports.py``         one-way transports of the throughput section (Ring rows, peers)
``multi.py``              shared-queue transports of the many-producers section, its stamps
``pings.py``              two-way links of the ping-pong section
``children.py``           forking children, collecting their values, failing loudly
``messages.py``           message buffers, sequence stamps and their checks, raw pipe I/O
``results.py``            the records a run produces, ``Report`` (the JSON, read back checked), ``BenchError``
``config.py``             sizes, geometry, timings; ``Settings``, ``DEFAULT``, ``QUICK``
========================  ==================================================================
"""

from .cli import main
from .config import DEFAULT as DEFAULT
from .config import QUICK as QUICK
from .config import Settings as Settings
from .results import BenchError
from .results import Report as Report
from .runner import run

__all__ = ["BenchError", "main", "run"]
