"Evaluation protocol: cross-architecture retraining, model selection on val only, coreset sets."
import os
import pytest, torch
from amd_nb.config import get_preset
from amd_nb.data import load_split
from amd_nb.experts import train_experts
from amd_nb.train import evaluate_retrieval
from amd_nb.spm import expert_embeddings
from amd_nb.distill import distill
from amd_nb.evaluate import synthetic_set, real_set, coreset, coreset_of, train_model, evaluate_set, eval_config, METRICS, CORESETS

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval')
    os.environ['AMD_NB_CACHE'] = str(root/'cache')
    cfg = get_preset('tiny').override({'expert.eval_every': 0})
    train, val, test = (load_split(cfg.data, s, progress=False) for s in ('train', 'val', 'test'))
    store = train_experts(cfg, root/'experts', train, progress=False)
    syn = distill(cfg.override({'distill.method': 'lors'}), store, None, train, progress=False)
    return cfg, store, syn, train, val, test

def test_cross_architecture(setup):
    cfg, store, syn, train, val, test = setup
    c = store.config.override({'eval.image_tower': 'efficientnet_lite0', 'eval.epochs': 2, 'eval.n_eval': 1})
    ec = eval_config(store.config, c)
    assert ec.model.image_tower == 'efficientnet_lite0' and store.config.model.image_tower == 'convnet'
    import dataclasses
    ec = dataclasses.replace(ec, eval=c.eval)
    model, info = train_model(synthetic_set(syn), ec, seed=1)
    assert sum(p.numel() for p in model.image.parameters()) > 1_000_000        # EfficientNet-Lite0, not the 8-wide ConvNet
    r = evaluate_retrieval(model, test)
    assert set(METRICS) <= set(r) and all(0 <= r[k] <= 100 for k in METRICS)

def test_select_on_val_never_touches_test(setup, monkeypatch):
    cfg, store, syn, train, val, test = setup
    c = cfg.override({'eval.select_on_val': True, 'eval.epochs': 4, 'eval.n_eval': 1})
    seen = []
    import amd_nb.evaluate as ev
    orig = ev.evaluate_retrieval
    monkeypatch.setattr(ev, 'evaluate_retrieval', lambda m, split, *a, **k: (seen.append(split.pairs.split), orig(m, split, *a, **k))[1])
    res = evaluate_set(coreset_of('random', train, 16, 0)[0], c, test, val, progress=False)
    assert seen == ['val'] * 4 + ['test']             # one look per epoch at val, one final look at test
    assert 1 <= res['runs'][0]['selected_epoch'] <= 4

def test_learned_lrs_used_unless_disabled(setup):
    cfg, store, syn, *_ = setup
    ts = synthetic_set(syn)
    _, info = train_model(ts, cfg.override({'eval.epochs': 1}), seed=0)
    assert info['lrs'] == {'image': pytest.approx(syn.lr_image.item()), 'text': pytest.approx(syn.lr_text.item())}
    _, info = train_model(ts, cfg.override({'eval.epochs': 1, 'eval.use_learned_lr': False}), seed=0)
    assert info['lrs'] == {'image': cfg.expert.lr_image, 'text': cfg.expert.lr_text}

@pytest.mark.parametrize('method', list(CORESETS))
def test_coreset_pairs_each_image_with_its_own_caption(setup, method):
    "A coreset of budget B is B real pairs: B images, B texts, text i a caption of image i (the pairing bug this guards against)."
    cfg, store, syn, train, *_ = setup
    emb = expert_embeddings(store, train)
    ts, _ = coreset_of(method, train, 12, seed=3, embeddings=emb)
    assert (len(ts), len(ts.images), ts.row_image) == (12, 12, None)
    for img, txt in zip(ts.images, ts.text):
        owners = train.caption_image[(train.text == txt).all(1)]          # the image(s) this caption belongs to
        assert any(torch.equal(train.images[o], img) for o in owners)
    if method != 'random':                                                 # feature coresets: the SPM caption rule
        sel_caps = [int(((train.text == t).all(1)).nonzero()[0]) for t in ts.text]
        owners = train.caption_image[sel_caps]
        assert torch.equal(torch.tensor(sel_caps), emb.nearest_captions(owners))

def test_coreset_refuses_a_foreign_caption(setup):
    cfg, store, syn, train, *_ = setup
    from amd_nb.data import DataError
    own = torch.tensor([int((train.caption_image == i).nonzero()[0]) for i in range(3)])
    with pytest.raises(DataError, match='belongs to image'): coreset(train, torch.tensor([0, 1, 2]), own.roll(1))

def test_val_split_judges_without_test(setup, tmp_path, monkeypatch):
    "`eval.split=val` judges on val: choosing settings never loads the test split."
    cfg, store, *_ = setup
    from amd_nb.evaluate import compare
    import amd_nb.evaluate as ev
    seen, orig = [], ev.load_split
    monkeypatch.setattr(ev, 'load_split', lambda c, split, **k: (seen.append(split), orig(c, split, **k))[1])
    res = compare(cfg.override({'eval.split': 'val', 'eval.n_eval': 1}), store, tmp_path/'cmp', methods=('random',), budgets=(8,), n_syn_sets=1, progress=False)
    assert 'val split' in res['protocol'] and 'random@8' in res['rows']
    assert 'val' in seen and 'test' not in seen

def test_sets_retrain_with_the_loss_they_were_distilled_with(setup, monkeypatch):
    "A distilled set's evaluation models train with its student's loss and logit scale; real pairs with the experts' InfoNCE."
    cfg, store, syn, train, val, test = setup
    import amd_nb.evaluate as ev
    mtt = distill(cfg.override({'distill.method': 'mtt_vl', 'distill.nce_scale': 0.2, 'distill.iterations': 2}), store, None, train, progress=False)
    assert mtt.meta['loss'] == 'infonce' and mtt.meta['loss_kwargs'] == {'scale': 0.2}
    assert syn.meta['loss'] == 'wbce' and syn.meta['loss_kwargs'] == {'scale': cfg.distill.wbce_scale}
    built, orig = [], ev.contrastive_loss
    monkeypatch.setattr(ev, 'contrastive_loss', lambda name, **kw: (built.append((name, kw)), orig(name, **kw))[1])
    c = cfg.override({'eval.epochs': 1})
    for ts in (synthetic_set(mtt), synthetic_set(syn), coreset_of('random', train, 16, 0)[0]): train_model(ts, c, seed=0)
    assert built == [('infonce', {'scale': 0.2}), ('wbce', {'scale': cfg.distill.wbce_scale}), ('infonce', {})]
    assert getattr(orig('infonce', **built[0][1]), 'scale') == 0.2
