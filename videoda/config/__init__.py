"""The one config layer: params.yaml (with its ``profile`` and ``method`` preset applied) -> one typed, checked
config per stage.

``fields`` holds the machinery, ``stages`` the table of every stage's config; each stage imports only its own
config module, so a stage's code dependencies stay its own.
"""
