"""AttnLRP: conservation, agreement with gradient x input where LRP is gradient x input, and a hand-written LRP
pass (relevance messages, rule by rule) against the relevance collected at the neuron sites."""

import pytest
import torch
import torch.nn.functional as F
from test_relevance import TEXTS, tiny
from tiny import tiny_tokenizer

import langneurons as ln
from langneurons.core.lrp import SUPPORTED, attnlrp, lrp_rules
from langneurons.core.sites import find_sites
from langneurons.identify import collect_relevance
from langneurons.stats.relevance import RelevanceRecorder, frozen


def bias_free(model_type: str):
    model = tiny(model_type)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.data.zero_()
        p.requires_grad_(False)
    return model


def input_relevance(model, ids: list[int], target: int, rule: str) -> tuple[float, float, float]:
    """(explained logit of `target` at the last position, summed relevance of the input embeddings, relevance
    the softmax rule absorbs on a one-token input: half of each attention block's output relevance)."""
    emb = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_()
    outputs = []

    def keep(_module, args):
        args[0].retain_grad()
        outputs.append(args[0])

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(keep) for layer in find_sites(model).layers]
    try:
        with attnlrp(model) if rule == "attnlrp" else torch.enable_grad():
            logit = model(inputs_embeds=emb).logits[0, -1, target]
            logit.backward()
    finally:
        for h in handles:
            h.remove()
    absorbed = sum(float((o.detach() * o.grad).sum()) / 2 for o in outputs)
    return float(logit), float((emb * emb.grad).sum()), absorbed


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_conservation_on_one_token(model_type):
    """One token, no biases: every AttnLRP rule but the softmax conserves relevance, and the softmax (its
    attention weight is the constant 1) absorbs exactly the attention weights' half of attn.v. So the input
    relevance plus that half equals the explained logit; gradient x input misses it by far."""
    model = bias_free(model_type)
    logit, r_in, absorbed = input_relevance(model, [50], 7, "attnlrp")
    assert abs(logit) > 1e-3 and abs(absorbed) > 1e-3
    assert r_in + absorbed == pytest.approx(logit, rel=1e-4)
    logit_g, r_in_g, absorbed_g = input_relevance(model, [50], 7, "grad_x_input")
    assert logit_g == pytest.approx(logit, rel=1e-6)
    assert abs(r_in_g + absorbed_g - logit) > 0.05 * abs(logit)
    assert abs(r_in_g - logit) > 0.05 * abs(logit)


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_every_supported_family_conserves(model_type):
    model = bias_free(model_type)
    logit, r_in, absorbed = input_relevance(model, [50], 7, "attnlrp")
    assert r_in + absorbed == pytest.approx(logit, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text"])
def test_share_absorbed_on_longer_inputs(model_type):
    """Longer inputs: the softmax rule absorbs a share of the logit; reported, and the input relevance stays
    bounded by a few times the explained output."""
    model = bias_free(model_type)
    for n in (1, 4, 16):
        logit, r_in, _ = input_relevance(model, list(range(40, 40 + n)), 7, "attnlrp")
        print(f"{model_type}: {n} tokens, logit {logit:+.4f}, input relevance {r_in:+.4f}, "
              f"share absorbed {1 - r_in / logit:+.3f}")
        assert abs(r_in) < 10 * abs(logit)


def test_linear_relu_network_both_rules_agree():
    """Linear layers and ReLUs only: the identity rule is gradient x input there, so both rules give the same
    relevance at the hidden units, and both conserve the output."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10, bias=False), torch.nn.ReLU(), torch.nn.Linear(10, 8, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3, bias=False)).double()
    x = torch.randn(5, 6, dtype=torch.float64)

    def relevance(lrp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        inp = x.clone().requires_grad_()
        hidden = {}
        net[3].register_forward_hook(lambda _m, _a, out: hidden.__setitem__("h", out))  # ReLU output
        with lrp_rules(identity=[net[1], net[3]]) if lrp else torch.enable_grad():
            h = net[:4](inp)
            h.retain_grad()
            out = net[4](h)[:, 1].sum()
            out.backward()
        net[3]._forward_hooks.clear()
        return h.detach() * h.grad, inp.detach() * inp.grad, out.detach()

    (h_lrp, in_lrp, out), (h_gi, in_gi, _) = relevance(True), relevance(False)
    torch.testing.assert_close(h_lrp, h_gi, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(in_lrp, in_gi, rtol=1e-12, atol=1e-12)
    assert float(in_lrp.sum()) == pytest.approx(float(out), rel=1e-10)
    assert not net[1]._forward_hooks and not net[3]._forward_hooks


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _linear(x: torch.Tensor, weight: torch.Tensor, r_out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """LRP-0 (epsilon -> 0) through z = x @ W.T: R_i = sum_j x_i W_ji R_j / z_j."""
    return x * ((r_out / z) @ weight)


def _ratio(r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.where(z != 0, r / torch.where(z != 0, z, 1), 0)


def hand_lrp(model, ids: list[int]) -> torch.Tensor:
    """AttnLRP by hand on a Llama, in float64, as relevance messages: the explained output is the sum of the
    logits of the actual next tokens; returns the relevance of each layer's down-projection input [L, T, N]."""
    cfg = model.config
    eps, heads, kv, d = cfg.rms_norm_eps, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    groups, T = heads // kv, len(ids)
    w = {n: p.detach().double() for n, p in model.named_parameters()}
    cos, sin = (c[0].double() for c in model.model.rotary_emb(torch.zeros(1), torch.arange(T)[None]))
    half = torch.cat([torch.cat([torch.zeros(d // 2, d // 2), -torch.eye(d // 2)], 1),
                      torch.cat([torch.eye(d // 2), torch.zeros(d // 2, d // 2)], 1)]).double()  # rotate_half
    rope = [torch.diag(cos[t]) + torch.diag(sin[t]) @ half for t in range(T)]  # q_rot[t] = rope[t] @ q[t]
    causal = torch.ones(T, T).tril().bool()

    h, saved = w["model.embed_tokens.weight"][ids], []
    for i in range(cfg.num_hidden_layers):  # forward, keeping what the LRP pass needs
        p = f"model.layers.{i}."
        x = _rms(h, w[p + "input_layernorm.weight"], eps)
        q, k, v = (x @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        qh, kh, vh = (t.view(T, n, d).transpose(0, 1) for t, n in ((q, heads), (k, kv), (v, kv)))
        qr = torch.stack([torch.stack([rope[t] @ qh[j, t] for t in range(T)]) for j in range(heads)])
        kr = torch.stack([torch.stack([rope[t] @ kh[j, t] for t in range(T)]) for j in range(kv)])
        s = torch.stack([qr[j] @ kr[j // groups].T for j in range(heads)]) * d**-0.5
        s = torch.where(causal, s, 0.0)
        a = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)
        o = torch.stack([a[j] @ vh[j // groups] for j in range(heads)])
        attn = o.transpose(0, 1).reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
        mid = h + attn
        x2 = _rms(mid, w[p + "post_attention_layernorm.weight"], eps)
        g, u = x2 @ w[p + "mlp.gate_proj.weight"].T, x2 @ w[p + "mlp.up_proj.weight"].T
        prod = F.silu(g) * u
        m = prod @ w[p + "mlp.down_proj.weight"].T
        saved.append(dict(x=x, q=q, k=k, v=v, qh=qh, kh=kh, vh=vh, qr=qr, kr=kr, s=s, a=a, o=o, attn=attn, h=h,
                          mid=mid, x2=x2, g=g, u=u, prod=prod, m=m, out=mid + m))
        h = mid + m
    f = _rms(h, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    r = torch.zeros(T, f.shape[1], dtype=torch.float64)
    r[:-1] = f[:-1] * head[ids[1:]]  # LRP-0 of each target logit onto the final norm's output
    # final norm: identity rule
    site = []
    for i in reversed(range(cfg.num_hidden_layers)):
        p, z = f"model.layers.{i}.", saved[i]
        r_m, r_mid = _ratio(r * z["m"], z["out"]), _ratio(r * z["mid"], z["out"])  # residual sum: proportional
        r_prod = _linear(z["prod"], w[p + "mlp.down_proj.weight"], r_m, z["m"])
        site.append(r_prod)
        r_gate = r_up = r_prod / 2  # uniform rule on gate x up; then the identity rule through the activation
        r_x2 = _linear(z["x2"], w[p + "mlp.gate_proj.weight"], r_gate, z["g"]) + \
            _linear(z["x2"], w[p + "mlp.up_proj.weight"], r_up, z["u"])
        r_mid = r_mid + r_x2  # post-attention norm: identity rule
        r_attn, r_h = _ratio(r_mid * z["attn"], z["mid"]), _ratio(r_mid * z["h"], z["mid"])
        r_o = _linear(z["o"].transpose(0, 1).reshape(T, -1), w[p + "self_attn.o_proj.weight"], r_attn, z["attn"])
        r_o = r_o.view(T, heads, d).transpose(0, 1)
        r_a, r_vh = torch.zeros_like(z["a"]), torch.zeros_like(z["vh"])
        for j in range(heads):  # o = a @ v: uniform rule, half to the attention weights, half to the values
            c = z["a"][j][:, :, None] * z["vh"][j // groups][None]  # [query, key, d]
            share = c * _ratio(r_o[j], z["o"][j])[:, None, :]
            r_a[j] = share.sum(-1) / 2
            r_vh[j // groups] += share.sum(0) / 2
        r_s = z["s"] * (r_a - z["a"] * r_a.sum(-1, keepdim=True))  # softmax rule (0 at masked entries)
        r_qr, r_kr = torch.zeros_like(z["qr"]), torch.zeros_like(z["kr"])
        for j in range(heads):  # s = q.k / sqrt(d): uniform rule
            c = z["qr"][j][:, None, :] * z["kr"][j // groups][None] * d**-0.5  # [query, key, d]
            share = c * _ratio(r_s[j], z["s"][j])[:, :, None]
            r_qr[j] = share.sum(1) / 2
            r_kr[j // groups] += share.sum(0) / 2
        r_qh = torch.stack([torch.stack([_linear(z["qh"][j, t], rope[t], r_qr[j, t], z["qr"][j, t]) for t in range(T)])
                            for j in range(heads)])
        r_kh = torch.stack([torch.stack([_linear(z["kh"][j, t], rope[t], r_kr[j, t], z["kr"][j, t]) for t in range(T)])
                            for j in range(kv)])
        r_x = sum(_linear(z["x"], w[p + f"self_attn.{n}_proj.weight"], rr.transpose(0, 1).reshape(T, -1), z[n])
                  for n, rr in (("q", r_qh), ("k", r_kh), ("v", r_vh)))
        r = r_h + r_x  # input norm: identity rule
    return torch.stack(site[::-1])


def test_neuron_relevance_equals_hand_written_attnlrp():
    model, tok = tiny("llama"), tiny_tokenizer()
    ids = [tok.bos_token_id, 50, 77, 12, 140, 9]
    sites = find_sites(model)
    rec = RelevanceRecorder(sites, skip=1, exclude_target=tok.bos_token_id, explain_logit=True)
    with rec, frozen(model), attnlrp(model, sites):
        assert rec.run(model, torch.tensor([ids])) == len(ids) - 1
    got = rec.take()["relevance"]
    expected = hand_lrp(model, ids)[:, 1:].sum(1)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    # the hooks are gone: a plain backward afterwards is gradient x input again
    plain = RelevanceRecorder(sites, skip=1, exclude_target=tok.bos_token_id, explain_logit=True)
    with plain, frozen(model):
        plain.run(model, torch.tensor([ids]))
    assert not torch.allclose(plain.take()["relevance"], got, rtol=1e-3)


def test_collect_relevance_with_attnlrp_rule(tmp_path):
    model, tok = tiny("gemma3_text"), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "ru": TEXTS["ru"]}, heldout_every=0)
    args = {"max_tokens": 30, "window": 16, "progress": False}
    lrp = collect_relevance(model, tok, corpus, rule="attnlrp", **args)
    plain = collect_relevance(model, tok, corpus, **args)
    assert lrp.rule == "attnlrp" and plain.rule == "grad_x_input" and lrp.meta["collection"]["rule"] == "attnlrp"
    torch.testing.assert_close(lrp.log_prob, plain.log_prob, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(lrp.relevance, plain.relevance)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ln.LangNeuronsError, match="cannot merge relevance of rules"):
        lrp + plain
    path = tmp_path / "r.safetensors"
    collect_relevance(model, tok, corpus, checkpoint=path, **args)
    with pytest.raises(ln.LangNeuronsError, match="other settings"):
        collect_relevance(model, tok, corpus, checkpoint=path, rule="attnlrp", **args)


def test_unsupported_family_and_unknown_rule():
    tok = tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"]}, heldout_every=0)
    with pytest.raises(ln.LangNeuronsError, match=r"does not support model type 'gpt2'.*use rule grad_x_input"):
        collect_relevance(tiny("gpt2"), tok, corpus, rule="attnlrp", max_tokens=30, progress=False)
    with pytest.raises(ln.LangNeuronsError, match="unknown relevance rule 'lrp'"):
        collect_relevance(tiny(), tok, corpus, rule="lrp", max_tokens=30, progress=False)


def test_cli_collect_relevance_rule(tmp_path, capsys):
    from langneurons.cli.main import main

    tiny().save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "texts").mkdir()
    for lang in ("en", "de"):
        (tmp_path / "texts" / f"{lang}.txt").write_text("\n\n".join(TEXTS[lang]), "utf-8")
    common = ["collect", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "texts"),
              "--max-tokens", "30", "--window", "16", "--quiet", "-o", str(tmp_path / "r.safetensors")]
    assert main([*common, "--relevance", "--rule", "attnlrp"]) == 0
    assert ln.identify.RelevanceStats.load(tmp_path / "r.safetensors").rule == "attnlrp"
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r.safetensors")]) == 0
    assert "rule attnlrp" in capsys.readouterr().out
    assert main([*common, "--rule", "attnlrp"]) == 2
    assert "--rule is an option of --relevance" in capsys.readouterr().err
