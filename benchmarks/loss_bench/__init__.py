"""The loss benchmark (benchmarks/bench_losses.py), in parts:

* ``cli``: the command line;
* ``cases``: what runs, from the registered losses (spoofloss.registry);
* ``inputs``: each case's inputs, modules and byte floor;
* ``steps``: the step each provider times (spoofloss, eager, compile) and the
  autograd floor;
* ``run``: measuring one case, all providers interleaved;
* ``cost_model``: the estimate printed first and the ETA;
* ``record``: the run's JSON record, saved with its plot;
* ``report``: the table, the targets and the plot, from a record.

Measurement itself (timing, memory, bandwidth) is benchmarks/harness.py.
"""
