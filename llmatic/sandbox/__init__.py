"""The boundary around generated code: fork server, kernel isolation, evaluators, scoring.

Run untrusted network code in fresh child processes with limits.

Design (docs/method.md §3.10): generated code never runs in the search process. A
*pre-warmed server* process (started once per run) imports torch, Lightning and the
worker, then ``fork()``s one fresh child per candidate, so a candidate pays milliseconds
instead of the ~10 s it takes a new interpreter to import Lightning. The server itself never
runs candidate code; each child runs exactly one candidate and exits.

Each child, before the candidate's code runs:

* starts a new session (its own process group), so a timeout kills it and anything it
  spawned with one ``SIGKILL`` to the group — a signal the code cannot catch;
* limits its data segment (``RLIMIT_DATA``) to the server's baseline + ``memory_mb``, its
  file sizes (``RLIMIT_FSIZE``) and core dumps;
* gets a scrubbed environment (no API keys), a private working directory, stdin from
  ``/dev/null`` and stdout/stderr redirected to capped files;
* installs an audit hook (``sys.addaudithook``) that refuses process creation, sockets,
  ``ctypes`` and writes outside its working directory.

DDP (``trainer=ddp`` with N > 1 devices, :func:`~llmatic.sandbox.ddp.plan_ranks`): the
server forks one *supervisor* per candidate instead, which starts the session, binds a
rendezvous socket on 127.0.0.1 only and forks N rank children before any audit hook exists;
each rank then gets the limits and the hook above (process creation stays refused) and
Lightning joins the ranks through ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_PORT`` instead
of launching them. The supervisor hosts the ranks' store itself, so they only connect to
loopback; the process group rendezvous and gloo / NCCL run in native code, which the audit
hook does not see (``torch.distributed`` is refused to the candidate by the static policy).
Only rank 0 predicts and writes ``result.json``; when any rank fails the supervisor kills
the others at once and reports the first failure as the candidate's; a timeout kills the
whole group.

Inside the child the candidate's imports are checked against ``sandbox.allowed_imports``
and the functions training relies on are compared with a snapshot after every stage
(:class:`llmatic.train.TamperGuard`); the search process scores the returned logits itself.
Before any of this, ``llmatic.extract.policy`` rejects code statically.

Threat model. Protected: the search process and its results (code never runs there; fitness
is computed there), other candidates (one process each), the file system outside the
child's directory (writes, deletions, renames), the network, other processes, secrets in
the environment. NOT protected: a kernel or CPython exploit, reads of files the user can
read (the child runs as the same user), a determined attacker who escapes the Python-level
checks (e.g. through a native-code bug), CPU time stolen until the timeout fires, and GPU
memory shared with other jobs. For untrusted models, also run the search in a container or
VM as an unprivileged user without network, or under gVisor (``runsc``).

Modules, in the order a candidate travels: :mod:`~llmatic.sandbox.evaluators` (where the
children are forked: local, pool, ray) -> :mod:`~llmatic.sandbox.client` (:class:`Sandbox`,
the search process's side) -> :mod:`~llmatic.sandbox.server` (the pre-warmed fork server) ->
:mod:`~llmatic.sandbox.child` (limits, the DDP supervisor, then the worker) with
:mod:`~llmatic.sandbox.isolation` (kernel layers) and :mod:`~llmatic.sandbox.audit` (the
audit hook) -> back in the parent, :mod:`~llmatic.sandbox.scoring`. :mod:`~llmatic.sandbox.ddp`
plans DDP ranks; :mod:`~llmatic.sandbox.common` holds helpers they share.
"""

from llmatic.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "client": ("ChildOutcome", "Sandbox", "server_environment"),
        "ddp": ("JOINABLE_DDP", "plan_ranks"),
        "evaluators": ("PoolEvaluator",),
        "isolation": ("isolation_report", "IsolationError", "LAYERS", "probe"),
        "scoring": ("outcome_to_result", "score_logits"),
    },
)
