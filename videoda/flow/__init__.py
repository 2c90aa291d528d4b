"""Optical flow for video self-training (VST): estimation backends, the HDF5 flow store, and warping.

Conventions, shared by every module here and by the stages that read ``data/flow/target_train.h5``:

- A flow field ``F_{a->b}`` lives on frame ``a``'s pixel grid: the pixel ``p = (x, y)`` of frame ``a`` (x to the
  right, y down, pixel centres at integer coordinates) shows the point seen at ``p + F_{a->b}(p)`` in frame ``b``.
  Vectors are in pixels of the prepared (training) resolution, component 0 = x, 1 = y.
- Backward warping puts data of frame ``b`` onto the grid of a *reference* frame ``a``:
  ``W_{b=>a}(z_b)(p) = z_b(p + F_{a->b}(p))``. It needs the flow *from the reference*: Eq. 10's
  ``W_{j=>i}`` uses ``F_{i->j}`` (``j = i - 1, i + 1``), Eq. 12's ``W_{t-tau=>t}`` uses ``F_{t->t-tau}``, and
  the same refinement applied to frame ``t - tau`` (Eq. 13 sums over both frames) uses ``F_{t-tau->t}``.

Modules: ``warp`` (the one warping module: probabilities, labels, occlusion mask), ``store`` (HDF5 read/write),
``backends`` (DIS, ground truth, FlowNet2 or any other ptlflow model from an offline checkpoint; ptlflow is
imported only when one is used),
``correlation`` (the exact FlowNetC correlation, fast on a CPU), ``quality`` (end-point error against ground truth).
"""
