"""The services a run's callbacks need from its workers, as one interface.

The trainer's backend (`runner.Backend`) is one; these defaults are a single process.
"""


class Workers:
    """What the preemption callback needs from the workers of a run (the trainer's backend
    provides it; these defaults are one process):

    - `request_stop()`: this worker was signalled. Under Horovod the flag rides in the next
      step's gradient allreduce (`distributed.StopFlag`), so asking costs no collective.
    - `stop_agreed()`: whether some worker asked, as of the last step (a local read).
    - `any_worker(flag)`: a collective "or" (validation has no gradients to ride in).
    - `average(value, count)`: a metric's mean over the workers.
    - `average_worker_state(model)`: averages the per-worker BN moving statistics (an
      exponential moving average is linear, so averaging mid-epoch leaves the epoch-end
      average as it would have been).
    """

    _stop = False

    def request_stop(self):
        self._stop = True

    def stop_agreed(self):
        return self._stop

    def any_worker(self, flag):
        return bool(flag)

    def average(self, value, count):
        return float(value)

    def average_worker_state(self, model):
        pass
