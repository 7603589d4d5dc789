"""The stress harness: ``python -m stress`` fuzzes shmring structures across
processes, SIGKILLs them at random, and names every forbidden outcome.

Modules, in the order a message travels (docs/stress.md has the whole story):

* cli       -- the matrix, the cells' subprocesses, progress, summary, exit status
* config    -- one cell's knobs and the command line that reruns it; --quick/--tough presets
* cell      -- the supervisor of one cell: lanes, fork children, kills, verdicts
* lanes     -- the supervisor's picture of its lanes and actors
* watchdogs -- the deadlock report and the busy-wait check
* schedule  -- every random decision, drawn from the seed
* adapters  -- what the harness needs from each structure (one adapter per structure)
* actors    -- producer and consumer loops, in fork children
* array_actors -- the Array lanes' writers/readers, adders/loaders, holders/observers
* message   -- the bytes of a message and their checks
* queue_message -- a Queue lane's messages: objects of four kinds, drawn from (producer, seq), and their checks
* board     -- the actors' crash-proof logs and the lanes' control words
* arbiter   -- the rules: forbidden and acceptable outcomes, judged from the logs
* outcomes  -- the outcome names
* procs     -- /proc and /dev/shm helpers
"""
