"""Collection: the actors' side of a run, behind one seam (`protocol.Collection`).

Place in the flow: **actors -> queue** -> replay. `actor` (actor coroutines, batched inference, `make_actor`),
`local` (the in-process backend), `workers` and `env_worker` (env worker processes), `ray_host` and
`ray_learner` (the Ray backend: hosts running actors, and the learner's side of them). Importing this
package imports none of them (the Ray modules need Ray).
"""
