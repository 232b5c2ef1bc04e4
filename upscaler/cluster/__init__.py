"""Jobs spread over a Dask cluster: a video's parts and a folder's images made by the cluster's workers.

`connect` opens the cluster (an address, or `local[:N]`), `worker` is what runs on each worker (the
model kept open between tasks), `video` and `images` are the driver's side of each job. Nothing here
is imported unless --cluster is given; Dask's `distributed` is an optional extra.
"""
