"""Tasks, grouped by the system they act on.

* :mod:`.locks`: ZooKeeper (coordination) locks;
* :mod:`.jobs`: the job board (a flow that posts other flows);
* :mod:`.instance`: the instance record in the API and cell databases;
* :mod:`.scheduler`: scheduler and placement (selection, allocations,
  reschedule retry);
* :mod:`.compute`: resource claim, spawn and finish on the compute host;
* :mod:`.network`: neutron ports; :mod:`.volume`: cinder attachments.
"""
