"""Stage 2, the runtime: a rendered request on the wire and the answer back to the LLM.

``trigger`` compiles a trigger (schema, webhook, directive); ``calls`` holds ``Runtime``, which checks
the arguments, renders, sends through a ``transport`` (pyreqwest's, ``client``, by default) behind the
outbound ``guard``, and masks what it reports (``masking``) before the answer, the merge and the log
record reach anyone.
"""
