"""Beside the runtime, storage: sessions, their client_data, call logs, API keys, company secrets.

``base`` is the ``Store`` protocol and the rules every backend shares; ``sqlite`` is the embedded default,
``postgres`` the backend for several replicas (extra ``[postgres]``); ``journal`` keeps completions of
calls the store could not take, on local disk, until it can.
"""
