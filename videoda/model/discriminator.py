"""Fully convolutional domain discriminators: the image one of AdaptSegNet/ADVENT and the sequence one of VAT.

AdaptSegNet's (and ADVENT's) discriminator is five 4x4 convolutions of stride 2 (64, 128, 256, 512 channels,
then one score map), each but the last followed by LeakyReLU(0.2). The sequence discriminator D_V of
Shin et al. (Sec. 5.1) replaces the first convolution by a 3D one of temporal stride 2, so that it reads the
stack of two per-frame maps (t - tau, t) and scores the pair jointly.
"""

from torch import nn

KINDS = ("image", "sequence")


class Discriminator(nn.Module):
    """Input ``(B, T, C, H, W)``: T per-frame maps (softmax or entropy) of each sample.

    ``kind="image"`` scores every frame on its own (2D first convolution, frames folded into the batch);
    ``kind="sequence"`` convolves pairs of frames with a (2, 4, 4) kernel of stride (2, 2, 2), so T must be even.
    Output: logits ``(B, T', 1, H/32, W/32)`` with T' = T for images and T / 2 for sequences.
    """

    def __init__(self, in_channels, kind="sequence", base_channels=64, frames=2):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"discriminator kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        c = base_channels
        if kind == "sequence":
            self.first = nn.Conv3d(in_channels, c, kernel_size=(2, 4, 4), stride=(2, 2, 2), padding=(0, 1, 1))
        else:
            self.first = nn.Conv2d(in_channels, c, kernel_size=4, stride=2, padding=1)
        layers = []
        for cin, cout in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)):
            layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(cin, cout, 4, stride=2, padding=1)]
        layers += [nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8 * c, 1, 4, stride=2, padding=1)]
        self.rest = nn.Sequential(*layers)

    def forward(self, x):
        if x.ndim != 5:
            raise ValueError(f"discriminator input must be (B, T, C, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"the discriminator's five stride-2 convolutions need maps of at least 32 x 32 pixels, "
                             f"got {tuple(x.shape[-2:])}")
        b, t = x.shape[:2]
        if self.kind == "sequence":
            if t % 2:
                raise ValueError(f"the sequence discriminator needs an even number of frames, got {t}")
            h = self.first(x.transpose(1, 2))                       # (B, 64, T/2, H/2, W/2)
            t = h.shape[2]
            h = h.transpose(1, 2).flatten(0, 1)                     # (B * T/2, 64, H/2, W/2)
        else:
            h = self.first(x.flatten(0, 1))                         # (B * T, 64, H/2, W/2)
        out = self.rest(h)
        return out.view(b, t, *out.shape[1:])
