"""Progress bars for a stage's long loops (rich), without torch: the stages that compute nothing with torch
(``synth``, ``prepare``) show them too, and a computing stage's run context (``videoda.utils.device.Runtime``)
draws its bars here."""

from rich.progress import track


def progress(items, description="", show=False):
    """``items``, wrapped in a rich progress bar labelled ``description`` when ``show``, else as they are."""
    return track(items, description=description) if show else items
