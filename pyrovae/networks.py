"""Encoder and decoder networks: plain ``torch.nn`` modules, no Pyro inside.

An encoder maps ``x`` of shape ``(..., *data_shape)`` to ``(loc, scale)`` of q(z|x),
each ``(..., latent_dim)``: ``heads(features(x))``, where ``features`` is its last hidden layer
(``hidden_width`` wide), the context a richer posterior family (:mod:`pyrovae.guides`) reads.
A decoder maps ``z`` of shape ``(..., latent_dim)`` to the
likelihood's raw parameters, shape ``(..., num_params, *data_shape)``. Leading batch
dimensions (particles, examples) pass through unchanged.
"""

import math

import torch
from torch import nn

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "GatedDense", "GatedEncoder", "GatedDecoder",
           "GatedConv", "GatedConvEncoder", "GatedConvDecoder", "build_networks", "NETWORKS", "ACTIVATIONS", "init_normal", "hidden_linears"]


def _mlp(sizes, activation):
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _scale_from_log(log_scale):
    # exp of a clamped log keeps sigma in [e^-10, e^10]: a finite, positive scale for Normal.
    return torch.exp(log_scale.clamp(-10.0, 10.0))


class MLPEncoder(nn.Module):
    """x -> (mu(x), sigma(x)); ``hidden=()`` makes mu and log sigma affine in x."""

    def __init__(self, data_shape, latent_dim, hidden=(400,), activation=nn.ReLU):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        data_dim = math.prod(self.data_shape)
        self.body = _mlp([data_dim, *hidden], activation)
        if hidden:
            self.body.append(activation())
        width = hidden[-1] if hidden else data_dim
        self.hidden_width = width
        self.loc = nn.Linear(width, latent_dim)
        self.log_scale = nn.Linear(width, latent_dim)

    def forward(self, x):
        return self.heads(self.features(x))

    def features(self, x):
        """The last hidden layer h(x)."""
        return self.body(x.flatten(-len(self.data_shape)))

    def heads(self, h):
        """h -> (mu, sigma)."""
        if torch.compiler.is_compiling():
            # both heads in one matrix product (one call forward, one for each gradient): in a
            # compiled graph the concatenated weight costs one small fused copy; eagerly it would
            # cost more than the second call it saves
            weight = torch.cat([self.loc.weight, self.log_scale.weight])
            bias = torch.cat([self.loc.bias, self.log_scale.bias])
            both = nn.functional.linear(h, weight, bias)
            # slices, not Tensor.split: AOTAutograd's cache refuses a graph that calls Tensor.split
            return both[..., :self.latent_dim], _scale_from_log(both[..., self.latent_dim:])
        return self.loc(h), _scale_from_log(self.log_scale(h))


class MLPDecoder(nn.Module):
    """z -> likelihood parameters; ``hidden=()`` makes the decoder affine: W z + b."""

    def __init__(self, data_shape, latent_dim, hidden=(400,), num_params=1, activation=nn.ReLU):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.num_params = num_params
        self.net = _mlp([latent_dim, *hidden, num_params * math.prod(self.data_shape)], activation)

    def forward(self, z):
        out = self.net(z)
        return out.reshape(*out.shape[:-1], self.num_params, *self.data_shape)


def _conv_trunk_shape(height, width):
    # two stride-2 convolutions with kernel 4 and padding 1 halve each side twice (rounding down).
    return height // 4, width // 4


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions then an affine map to (mu, log sigma); for (C, H, W) images."""

    def __init__(self, data_shape, latent_dim, hidden=(400,), channels=(32, 64), activation=nn.ReLU):
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(
                f"network='conv' needs image data of shape (channels, height, width); got data_shape={tuple(data_shape)}"
            )
        c, h, w = data_shape
        if h < 4 or w < 4:
            raise ValueError(f"network='conv' needs images of at least 4x4 pixels; got {h}x{w}")
        self.data_shape = tuple(data_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels[0], 4, stride=2, padding=1),
            activation(),
            nn.Conv2d(channels[0], channels[1], 4, stride=2, padding=1),
            activation(),
        )
        hh, ww = _conv_trunk_shape(h, w)
        width = hidden[-1] if hidden else channels[1] * hh * ww
        self.hidden_width = width
        self.fc = nn.Sequential(nn.Linear(channels[1] * hh * ww, width), activation()) if hidden else nn.Identity()
        self.loc = nn.Linear(width, latent_dim)
        self.log_scale = nn.Linear(width, latent_dim)

    def forward(self, x):
        return self.heads(self.features(x))

    def features(self, x):
        batch = x.shape[: -len(self.data_shape)]
        h = self.conv(x.reshape(-1, *self.data_shape)).flatten(1)
        return self.fc(h).reshape(*batch, -1)

    def heads(self, h):
        return self.loc(h), _scale_from_log(self.log_scale(h))


class ConvDecoder(nn.Module):
    """Affine map from z, then two stride-2 transposed convolutions; cropped to (C, H, W)."""

    def __init__(self, data_shape, latent_dim, hidden=(400,), num_params=1, channels=(64, 32), activation=nn.ReLU):
        super().__init__()
        if len(data_shape) != 3:
            raise ValueError(
                f"network='conv' needs image data of shape (channels, height, width); got data_shape={tuple(data_shape)}"
            )
        c, h, w = data_shape
        self.data_shape = tuple(data_shape)
        self.num_params = num_params
        self.trunk_shape = (channels[0], -(-h // 4), -(-w // 4))
        trunk_size = math.prod(self.trunk_shape)
        sizes = [latent_dim, *hidden, trunk_size]
        self.fc = nn.Sequential(_mlp(sizes, activation), activation())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(channels[0], channels[1], 4, stride=2, padding=1),
            activation(),
            nn.ConvTranspose2d(channels[1], num_params * c, 4, stride=2, padding=1),
        )

    def forward(self, z):
        batch = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self.trunk_shape)
        c, height, width = self.data_shape
        out = self.deconv(h)[..., :height, :width]
        return out.reshape(*batch, self.num_params, c, height, width)


def _he_normal_(module):
    """w ~ N(0, 2 / fan_in) for every linear layer's weight (biases keep PyTorch's default), as
    Tomczak & Welling's networks are initialized."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / layer.in_features))


class GatedDense(nn.Module):
    """A gated unit (Dauphin et al. 2017, the layers of Tomczak & Welling's VampPrior networks):
    y = a(W_h x + b_h) * sigmoid(W_g x + b_g), a the activation (identity in the paper)."""

    def __init__(self, fan_in, fan_out, activation=nn.Identity):
        super().__init__()
        self.h = nn.Linear(fan_in, fan_out)
        self.g = nn.Linear(fan_in, fan_out)
        self.activation = activation()

    def forward(self, x):
        return self.activation(self.h(x)) * torch.sigmoid(self.g(x))


def _gated_stack(sizes, activation):
    return nn.Sequential(*(GatedDense(fan_in, fan_out, activation) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])))


class GatedEncoder(nn.Module):
    """x -> (mu(x), sigma(x)) through gated layers (Tomczak & Welling 2018): mu affine in the last
    hidden layer, log sigma^2 = hardtanh(affine, -6, 2), so sigma is in [e^-3, e]; weights He-normal.
    ``hidden`` must name at least one layer."""

    LOG_VARIANCE_RANGE = (-6.0, 2.0)

    def __init__(self, data_shape, latent_dim, hidden=(300, 300), activation=nn.Identity):
        super().__init__()
        if not hidden:
            raise ValueError("network 'gated' needs at least one hidden layer (e.g. hidden = [300, 300])")
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.body = _gated_stack([math.prod(self.data_shape), *hidden], activation)
        self.hidden_width = hidden[-1]
        self.loc = nn.Linear(hidden[-1], latent_dim)
        self.log_variance = nn.Linear(hidden[-1], latent_dim)
        _he_normal_(self)

    def forward(self, x):
        return self.heads(self.features(x))

    def features(self, x):
        return self.body(x.flatten(-len(self.data_shape)))

    def heads(self, h):
        low, high = self.LOG_VARIANCE_RANGE
        return self.loc(h), torch.exp(0.5 * nn.functional.hardtanh(self.log_variance(h), low, high))


class GatedDecoder(nn.Module):
    """z -> likelihood parameters through gated layers, then one affine layer; weights He-normal."""

    def __init__(self, data_shape, latent_dim, hidden=(300, 300), num_params=1, activation=nn.Identity):
        super().__init__()
        if not hidden:
            raise ValueError("network 'gated' needs at least one hidden layer (e.g. hidden = [300, 300])")
        self.data_shape = tuple(data_shape)
        self.num_params = num_params
        self.body = _gated_stack([latent_dim, *hidden], activation)
        self.out = nn.Linear(hidden[-1], num_params * math.prod(self.data_shape))
        _he_normal_(self)

    def forward(self, z):
        out = self.out(self.body(z))
        return out.reshape(*out.shape[:-1], self.num_params, *self.data_shape)


class GatedConv(nn.Module):
    """A gated convolution, y = a(conv_h(x)) * sigmoid(conv_g(x)), two convolutions (``transposed``
    or not) of the same shape, ``a`` the activation (identity in the papers): the unit of van den
    Berg et al. (2018)'s and Tomczak & Welling (2018)'s convolutional VAEs."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 transposed=False, activation=nn.Identity):
        super().__init__()
        self.activation = activation()
        if transposed:
            def make():
                return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding)
        else:
            def make():
                return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.h, self.g = make(), make()

    def forward(self, x):
        return self.activation(self.h(x)) * torch.sigmoid(self.g(x))


def _gated_conv_sides(data_shape):
    """(channels, height, width, and the sides after the two stride-2 layers: ceil(side / 4))."""
    if len(data_shape) != 3:
        raise ValueError(
            f"network='gated-conv' needs image data of shape (channels, height, width); got data_shape={tuple(data_shape)}"
        )
    c, h, w = data_shape
    return c, h, w, -(-(-(-h // 2)) // 2), -(-(-(-w // 2)) // 2)


class GatedConvEncoder(nn.Module):
    """x -> (mu(x), sigma(x)) through six gated convolutions (van den Berg et al. 2018's encoder:
    kernel 5, channels 32, 32, 64, 64, 64, strides 1, 2, 1, 2, 1, then a gated convolution as wide as
    the remaining ceil(H/4) x ceil(W/4) map, to ``hidden[-1]`` channels, 256 in the paper); mu affine in those
    features, sigma^2 = softplus(affine), as their code has it. ``activation`` on each unit's value
    branch (the paper's: identity)."""

    def __init__(self, data_shape, latent_dim, hidden=(256,), activation=nn.Identity):
        super().__init__()
        c, _, _, h4, w4 = _gated_conv_sides(data_shape)
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        width = hidden[-1] if hidden else 256
        self.hidden_width = width
        a = activation
        self.conv = nn.Sequential(
            GatedConv(c, 32, 5, 1, 2, activation=a), GatedConv(32, 32, 5, 2, 2, activation=a),
            GatedConv(32, 64, 5, 1, 2, activation=a), GatedConv(64, 64, 5, 2, 2, activation=a),
            GatedConv(64, 64, 5, 1, 2, activation=a), GatedConv(64, width, (h4, w4), 1, 0, activation=a),
        )
        self.loc = nn.Linear(width, latent_dim)
        self.variance = nn.Linear(width, latent_dim)

    def forward(self, x):
        return self.heads(self.features(x))

    def features(self, x):
        batch = x.shape[: -len(self.data_shape)]
        return self.conv(x.reshape(-1, *self.data_shape)).reshape(*batch, self.hidden_width)

    def heads(self, h):
        return self.loc(h), nn.functional.softplus(self.variance(h)).sqrt()


class GatedConvDecoder(nn.Module):
    """z -> likelihood parameters through six gated transposed convolutions (van den Berg et al.
    2018's decoder: z as a 1x1 map with ``latent_dim`` channels, widened to ceil(H/4) x ceil(W/4)
    with 64 channels, then kernel 5, channels 64, 32, 32, 32, 32, strides 1, 2, 1, 2, 1) and a 1x1
    convolution to ``num_params`` parameters per pixel, cropped to H x W where 4 does not divide a side."""

    def __init__(self, data_shape, latent_dim, hidden=(256,), num_params=1, activation=nn.Identity):
        super().__init__()
        c, _, _, h4, w4 = _gated_conv_sides(data_shape)
        self.data_shape = tuple(data_shape)
        self.num_params = num_params
        a = activation
        self.deconv = nn.Sequential(
            GatedConv(latent_dim, 64, (h4, w4), 1, 0, transposed=True, activation=a),
            GatedConv(64, 64, 5, 1, 2, transposed=True, activation=a),
            GatedConv(64, 32, 5, 2, 2, 1, transposed=True, activation=a),
            GatedConv(32, 32, 5, 1, 2, transposed=True, activation=a),
            GatedConv(32, 32, 5, 2, 2, 1, transposed=True, activation=a),
            GatedConv(32, 32, 5, 1, 2, transposed=True, activation=a),
            nn.Conv2d(32, num_params * c, 1),
        )

    def forward(self, z):
        batch = z.shape[:-1]
        _, height, width = self.data_shape
        out = self.deconv(z.reshape(-1, z.shape[-1], 1, 1))[..., :height, :width]
        return out.reshape(*batch, self.num_params, *self.data_shape)


NETWORKS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder), "gated": (GatedEncoder, GatedDecoder),
            "gated-conv": (GatedConvEncoder, GatedConvDecoder)}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "identity": nn.Identity}


def init_normal(layers, std: float) -> None:
    """Draws the weights and biases of the linear ``layers`` from N(0, std^2), as Pyro's
    semi-supervised example initializes its MLPs' hidden layers (std 0.001)."""
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0.0, std)
            layer.bias.normal_(0.0, std)


def hidden_linears(network: nn.Sequential):
    """The linear layers of an MLP (:func:`_mlp`) but its last, the output layer."""
    return [m for m in network if isinstance(m, nn.Linear)][:-1]


def build_networks(network, data_shape, latent_dim, hidden, num_params, activation="relu"):
    """Name -> (encoder, decoder) for the given shapes; ``activation`` ``"relu"``, ``"tanh"``
    (Burda et al.'s networks) or ``"identity"`` between the hidden layers (of a gated network: on
    the value branch of each gated unit, identity in Tomczak & Welling's)."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORKS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    encoder_cls, decoder_cls = NETWORKS[network]
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden layer sizes must be positive integers; got hidden={hidden}")
    act = ACTIVATIONS[activation]
    return (
        encoder_cls(data_shape, latent_dim, hidden, activation=act),
        decoder_cls(data_shape, latent_dim, hidden, num_params=num_params, activation=act),
    )
