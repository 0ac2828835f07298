"Heavier checks of amd_nb.models: real backbones, functional use of whole dual encoders, recall on larger cases."
import math
import pytest, torch, torch.nn.functional as F
from amd_nb.config import ModelConfig
from amd_nb.models import (CLIP_MEAN, CLIP_STD, EFFNET_LITE_MEAN, IMAGENET_MEAN, IMAGENET_STD, DualEncoder, ImageTower,
                           InfoNCE, LowRankSim, ParamLayout, SoftInfoNCE, TextTower, WeightedBCE, build_dual_encoder,
                           contrastive_loss, efficientnet_lite0_weights, flat_grad, functional_forward, image_tower,
                           logits_from, recall_at_k, register_image_tower, similarity)


def _check_functional(module, *args, loss=lambda o: (o ** 2).sum()):
    "functional_forward == module forward; d loss / d flat == the module's flattened parameter grads."
    lay = ParamLayout.of(module)
    flat = lay.flatten(module).requires_grad_()
    out_f, out_m = functional_forward(module, lay, flat, *args), module(*args)
    torch.testing.assert_close(out_f, out_m, rtol=1e-5, atol=1e-5)
    loss(out_f).backward()
    module.zero_grad(); loss(out_m).backward()
    torch.testing.assert_close(flat.grad, flat_grad(module, lay), rtol=1e-4, atol=1e-5)
    return lay


@pytest.mark.parametrize('norm', ['instancenorm', 'batchnorm', 'none'])
@pytest.mark.parametrize('frozen', [False, True])
def test_functional_dual_encoder(norm, frozen):
    torch.manual_seed(0)
    m = build_dual_encoder(ModelConfig(width=8, depth=3, norm=norm, embed_dim=16, freeze_backbone=frozen), 12, 16).eval()
    x, e = torch.randn(6, 3, 16, 16), torch.randn(6, 12)
    lay = _check_functional(m, x, e, loss=InfoNCE())
    if frozen: assert [n for n in lay.names if n.startswith('image.')] == ['image.head.weight', 'image.head.bias']
    else: assert 'image.backbone.block1.0.weight' in lay.names
    _check_functional(m.image, x); _check_functional(m.text, e)


def test_functional_grad_reaches_pixels_and_flat():
    "The student's meta-gradient: through the functional forward into the pixels and the flat parameters."
    torch.manual_seed(0)
    m = build_dual_encoder(ModelConfig(width=4, depth=2, embed_dim=8, freeze_backbone=True), 6, 8)
    lay = ParamLayout.of(m.image)
    flat, x = lay.flatten(m.image).requires_grad_(), torch.randn(4, 3, 8, 8, requires_grad=True)
    logits = logits_from(functional_forward(m.image, lay, flat, x), m.text(torch.randn(4, 6)), m.temperature)
    gf, gx = torch.autograd.grad(InfoNCE()(logits), (flat, x))
    assert gf.abs().sum() > 0 and gx.abs().sum() > 0
    assert all(p.grad is None for p in m.image.backbone.parameters())


def test_functional_train_mode_batchnorm_matches():
    "Train mode (batch statistics) gives the same outputs functionally and as a module."
    torch.manual_seed(0)
    t = image_tower('convnet', 8, 16, ModelConfig(width=4, depth=2, norm='batchnorm')).train()
    _check_functional(t, torch.randn(5, 3, 16, 16))


def test_param_layout_roundtrip_and_errors():
    torch.manual_seed(0)
    a, b = (build_dual_encoder(ModelConfig(width=4, depth=2, embed_dim=8), 6, 8) for _ in range(2))
    lay = ParamLayout.of(a)
    assert lay.numel == sum(p.numel() for p in a.parameters())
    flat = lay.flatten(a)
    assert not flat.requires_grad and flat.dtype == torch.float32
    lay.load_into(b, flat)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()): assert torch.equal(p, q), n
    # views: writing through unflatten changes flat
    v = lay.unflatten(flat)
    v['text.proj.bias'].fill_(7.)
    assert (flat == 7.).sum() == 8
    assert ParamLayout.from_json(lay.to_json()) == lay
    import json; assert ParamLayout.from_json(json.loads(json.dumps(lay.to_json()))) == lay
    with pytest.raises(ValueError, match='the layout needs'): lay.load_into(b, flat[:-1])
    # half-precision storage loads back into a float32 module
    lay.load_into(b, flat.half())
    torch.testing.assert_close(lay.flatten(b), flat.half().float())


def test_freeze_backbone_stays_eval():
    t = image_tower('convnet', 8, 16, ModelConfig(width=4, depth=2, norm='batchnorm')).freeze_backbone()
    t.train(); assert t.training and not t.backbone.training and t.head.training
    t.eval(); t.train(True); assert not t.backbone.training
    m = DualEncoder(t, TextTower(6, 8)); m.train()
    assert not m.image.backbone.training
    assert ParamLayout.of(m.image).names == ['head.weight', 'head.bias']


def test_register_tiny_tower():
    @register_image_tower('tiny_pytest')
    def tiny(embed_dim, image_size, cfg): return ImageTower(torch.nn.Flatten(), 3 * image_size ** 2, embed_dim)
    m = build_dual_encoder(ModelConfig(image_tower='tiny_pytest', embed_dim=4), 5, 2)
    assert m(torch.zeros(3, 3, 2, 2), torch.randn(2, 5)).shape == (3, 2)
    with pytest.raises(ValueError, match="unknown image tower 'nope'; known: .*tiny_pytest"): image_tower('nope')
    from amd_nb.registry import TOWERS
    TOWERS.unregister('tiny_pytest')


# ---------------------------------------------------------------- real backbones

def test_efficientnet_lite0_pretrained_offline():
    t = image_tower('efficientnet_lite0', 16, 64, ModelConfig(pretrained=True))
    sd = torch.load(efficientnet_lite0_weights(), map_location='cpu', weights_only=True)
    ours = t.backbone.state_dict()   # the same weights, regrouped into stages (stem, stage1..7, head)
    for k, r in [('stem.0.weight', '_conv_stem.weight'), ('stage4.0._depthwise_conv.weight', '_blocks.5._depthwise_conv.weight'),
                 ('stage7.0._project_conv.weight', '_blocks.15._project_conv.weight'), ('head.1.running_var', '_bn1.running_var')]:
        assert torch.equal(ours[k], sd[r]), k
    assert sum(v.numel() for v in ours.values()) == sum(v.numel() for k, v in sd.items() if not k.startswith('_fc'))
    assert t.mean == EFFNET_LITE_MEAN and t.feat_dim == 1280
    t.eval()
    with torch.no_grad(): y = t(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 16) and torch.isfinite(y).all()
    assert t(torch.randn(1, 3, 40, 40)).shape == (1, 16)      # dynamic same-padding: any size works


def test_efficientnet_lite0_frozen_functional():
    torch.manual_seed(0)
    m = build_dual_encoder(ModelConfig(image_tower='efficientnet_lite0', embed_dim=8, freeze_backbone=True), 6, 32)
    lay = _check_functional(m, torch.randn(3, 3, 32, 32), torch.randn(3, 6), loss=InfoNCE())
    assert lay.names[:2] == ['image.head.weight', 'image.head.bias']


def test_efficientnet_lite0_missing_weights(monkeypatch, tmp_path):
    import amd_nb.models as M
    monkeypatch.setattr(M, 'efficientnet_lite0_weights', lambda: str(tmp_path / 'nope.pth'))
    with pytest.raises(RuntimeError, match='cannot read efficientnet_lite0 weights.*pretrained=False'):
        image_tower('efficientnet_lite0', cfg=ModelConfig(pretrained=True))


def test_timm_untrained_and_nfnet_registered():
    t = image_tower('timm:resnet18', 8, 32, ModelConfig(pretrained=False))
    assert (t.feat_dim, t.mean, t.std) == (512, IMAGENET_MEAN, IMAGENET_STD)
    assert t(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    with pytest.raises(ValueError, match="unknown timm model 'resnet_nope'"):
        image_tower('timm:resnet_nope', cfg=ModelConfig(pretrained=False))
    t = image_tower('nfnet_l0', 8, 32, ModelConfig(pretrained=False)).eval()
    assert t.feat_dim == 2304 and t(torch.randn(1, 3, 32, 32)).shape == (1, 8)


def _offline(monkeypatch, tmp_path):
    "No network, empty cache: pretrained downloads must fail at once."
    import huggingface_hub.constants as C
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(C, 'HF_HUB_OFFLINE', True)      # read at import time; patch the live value too
    monkeypatch.setenv('HF_HOME', str(tmp_path))
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))


def test_timm_pretrained_offline_raises_clear_error(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(RuntimeError, match=r"pretrained weights for timm model 'resnet18'.*\$HF_HOME.*pretrained=False"):
        image_tower('timm:resnet18', cfg=ModelConfig(pretrained=True))


def test_openclip_untrained_small():
    t = image_tower('openclip:ViT-S-32-alt', 16, 32, ModelConfig(pretrained=False))
    assert (t.feat_dim, t.mean, t.std) == (256, CLIP_MEAN, CLIP_STD)
    x = torch.randn(2, 3, 32, 32)
    assert t(x).shape == (2, 16)
    t.freeze_backbone()
    assert ParamLayout.of(t).names == ['head.weight', 'head.bias']
    _check_functional(t, x)
    with pytest.raises(ValueError, match="unknown open_clip architecture 'ViT-Q-99'"):
        image_tower('openclip:ViT-Q-99', cfg=ModelConfig(pretrained=False))


def test_openclip_pretrained_offline_raises_clear_error(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    for spec in ['openclip:ViT-B-32/openai', 'openclip:ViT-B-32']:      # no tag: the first listed ('openai')
        with pytest.raises(RuntimeError, match=r"could not load open_clip weights ViT-B-32/openai.*\$HF_HOME.*pretrained=False"):
            image_tower(spec, cfg=ModelConfig(pretrained=True))
    with pytest.raises(RuntimeError, match="no pretrained weights for 'ViT-S-32-alt'"):
        image_tower('openclip:ViT-S-32-alt', cfg=ModelConfig(pretrained=True))


# ---------------------------------------------------------------- losses and similarity

def test_losses_agree_and_are_differentiable():
    torch.manual_seed(0)
    lg = torch.randn(7, 7, requires_grad=True)
    torch.testing.assert_close(SoftInfoNCE()(lg, torch.eye(7)), InfoNCE()(lg))
    # WBCE with identity targets: mean of diagonal BCE and off-diagonal BCE
    bce = F.binary_cross_entropy_with_logits(lg, torch.eye(7), reduction='none')
    exp = (bce.diagonal().mean() + bce[~torch.eye(7, dtype=bool)].mean()) / 2
    torch.testing.assert_close(WeightedBCE()(lg, torch.eye(7)), exp)
    for name in ['infonce', 'soft_infonce', 'wbce']:
        f = contrastive_loss(name)
        l = f(lg) if name == 'infonce' else f(lg, torch.eye(7))
        g, = torch.autograd.grad(l, lg); assert torch.isfinite(g).all()
    # a logit scale s is the loss of s·logits (InfoNCE's softer temperature τ/s, as WBCE's scale); 1 changes nothing
    for name in ['infonce', 'soft_infonce', 'wbce']:
        torch.testing.assert_close(contrastive_loss(name, scale=0.1)(lg, torch.eye(7)), contrastive_loss(name)(0.1 * lg, torch.eye(7)))
    assert torch.equal(InfoNCE(1.0)(lg), InfoNCE()(lg)) and not torch.allclose(InfoNCE(0.1)(lg), InfoNCE()(lg))


def test_lowrank_block_large_and_device_free():
    torch.manual_seed(0)
    s = similarity('lowrank', 50, rank=4, alpha=2.)
    with torch.no_grad(): s.R.normal_()
    idx = torch.randint(0, 50, (20,))
    torch.testing.assert_close(s(idx), s()[idx][:, idx])
    torch.testing.assert_close(s(), torch.diag(s.a) + 0.5 * s.L @ s.R.T)
    assert isinstance(s, LowRankSim) and len(list(similarity('identity', 3).parameters())) == 0


# ---------------------------------------------------------------- recall

def _brute(img, txt, ci, ks):
    s = (F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).tolist()
    rank = lambda row, j: sorted(range(len(row)), key=lambda k: -row[k]).index(j)
    tr = [min(rank(s[i], j) for j in range(len(ci)) if ci[j] == i) for i in range(len(img)) if i in ci]
    ir = [rank([s[i][j] for i in range(len(img))], ci[j]) for j in range(len(ci))]
    out = {f'TR@{k}': 100 * sum(r < k for r in tr) / len(tr) for k in ks}
    out |= {f'IR@{k}': 100 * sum(r < k for r in ir) / len(ir) for k in ks}
    return out | {'r_mean': sum(out.values()) / len(out)}


@pytest.mark.parametrize('seed', range(6))
def test_recall_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 30
    ci = torch.repeat_interleave(torch.arange(n), torch.randint(0 if seed % 2 else 1, 6, (n,), generator=g))  # odd seeds: some images captionless
    img, txt = torch.randn(n, 3, generator=g), torch.randn(len(ci), 3, generator=g)
    if seed >= 4: img, txt = (img * 2).round(), (txt * 2).round()   # ties
    txt[0] = 0 if seed == 5 else txt[0]                               # zero embedding: all-zero similarities
    got, exp = recall_at_k(img, txt, ci), _brute(img, txt, ci.tolist(), (1, 5, 10))
    assert got.keys() == exp.keys()
    for k in exp: assert math.isclose(got[k], exp[k], abs_tol=1e-3), (k, got[k], exp[k])


def test_recall_perfect_and_chunked(monkeypatch):
    n = 40
    img = torch.randn(n, 64)
    ci = torch.arange(n).repeat_interleave(5)
    txt = img[ci] + 0.01 * torch.randn(len(ci), 64)
    r = recall_at_k(img, txt, ci)
    assert all(v == 100. for v in r.values()), r
    import amd_nb.models as M
    orig = M._chunked_ranks
    monkeypatch.setattr(M, '_chunked_ranks', lambda s, f, chunk=1024: orig(s, f, chunk=7))
    assert recall_at_k(img, txt.flip(0), ci.flip(0)) == r


@pytest.mark.parametrize('stages', [1, 2])
def test_efficientnet_lite0_trained_stages(stages):
    "The last stages of a frozen Lite0 train with the head: the student (from the frozen stages' features) equals the module, pixel gradients pass through, batch norms keep their statistics."
    from amd_nb.matching import Student
    torch.manual_seed(0)
    m = build_dual_encoder(ModelConfig(image_tower='efficientnet_lite0', embed_dim=8, pretrained=True, freeze_backbone=True, train_stages=stages), 6, 32)
    st = Student(m, 'infonce')
    names = st.layouts['image'].names
    assert {n.split('.')[1] for n in names if n.startswith('backbone.')} == ({'head'} if stages == 1 else {'head', 'stage7'})
    bn = [mod for mod in m.image.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    stats = [b.running_mean.clone() for b in bn]
    x, e = torch.randn(4, 3, 32, 32, requires_grad=True), torch.randn(4, 6)
    theta = {k: st.layouts[k].flatten(getattr(m, k)) for k in ('image', 'text')}
    feats = st.image_inputs(x)
    torch.testing.assert_close(st.logits(theta, feats, e), m(x, e), rtol=1e-5, atol=1e-5)
    gs, _ = st.grads(theta, feats, e, create_graph=True)
    assert gs['image'].abs().sum() > 0
    (gx,) = torch.autograd.grad(gs['image'].square().sum(), x)                 # second order, into the pixels
    assert gx.abs().sum() > 0
    assert all(torch.equal(b.running_mean, s) for b, s in zip(bn, stats))      # nothing written into the running statistics


def test_train_stages_needs_a_frozen_backbone():
    from amd_nb.config import ConfigError
    with pytest.raises(ConfigError, match='train_stages: 2 needs freeze_backbone=true'): ModelConfig(train_stages=2)
    with pytest.raises(ConfigError, match='leaves nothing on the image side to train'): ModelConfig(freeze_backbone=True, image_head=False)
    with pytest.raises(ConfigError, match=r'model.train_stages: convnet: train_stages must be in 0..2'):
        build_dual_encoder(ModelConfig(width=4, depth=3, freeze_backbone=True, train_stages=3), 6, 16)
    m = build_dual_encoder(ModelConfig(width=4, depth=3, image_head=False, freeze_backbone=True, train_stages=1), 6, 16)
    assert m.image.embed_dim == m.text.embed_dim == 4 * 2 * 2                   # no image head: the text head projects to the feature's width
