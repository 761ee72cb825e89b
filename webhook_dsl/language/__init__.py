"""Stage 1, the language: template text to an immutable render plan.

``grammar`` (the Lark grammar, ``webhook.lark``) and ``parse`` read text into the syntax tree of
``syntax``; ``template`` checks a webhook config; ``compiler`` turns it into a ``plan``, whose render
runs the function ``codegen`` generates; ``encode`` puts each value where it lands.
Nothing here touches the network or storage.
"""
