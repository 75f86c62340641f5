"""course_lib.chat on a tiny random stand-in (the real SmolLM2 is tested once its loader is merged):
streamed, whole and GPT.generate answers agree token for token; stops, seeds, limits, context cropping;
the ``chat`` command line with --prompt and with a REPL on stdin."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from chat_helpers import tiny_chat_model, tiny_tokenizer, user

from course_lib import chat as chat_mod
from course_lib.chat import EOS, IM_END, PromptTooLongError, StopStrings, load_chat_model
from course_lib.cli import main
from course_lib.tokenizers import StreamDecoder, printable

QUESTION = user("What is two plus two?")


def reference_answer(cm, messages, n, **sampling):
    """GPT.generate on the rendered prompt, cut before the first stop token: (ids, stopped)."""
    prompt = cm.tokenizer.encode(cm.template(messages))
    idx = torch.tensor([prompt])
    new = cm.model.generate(idx, n, **sampling)[0, len(prompt) :].tolist()
    stops = {cm.tokenizer.special_tokens[s] for s in (IM_END, EOS)}
    cut = next((k for k, t in enumerate(new) if t in stops), None)
    return (new, False) if cut is None else (new[:cut], True)


# ------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_stream_equals_chat_equals_generate(use_cache):
    cm = tiny_chat_model()
    ids, stopped = reference_answer(cm, QUESTION, 40, temperature=0, use_cache=use_cache)
    stream = cm.stream(QUESTION, max_new_tokens=40, temperature=0)
    pieces = list(stream)
    assert len(pieces) > 1  # text arrives piece by piece, not at the end
    assert "".join(pieces) == cm.tokenizer.decode(ids) == cm.chat(QUESTION, 40, temperature=0)
    assert stream.completion_tokens == len(ids) + stopped
    assert stream.prompt_tokens == len(cm.tokenizer.encode(cm.template(QUESTION)))
    assert stream.finish_reason == ("stop" if stopped else "length")


def test_im_end_stops_the_answer():
    cm = tiny_chat_model()
    ids, _ = reference_answer(cm, QUESTION, 20, temperature=0)
    im_end = cm.tokenizer.special_tokens[IM_END]
    k = next(k for k in range(2, len(ids)) if ids[k] not in ids[:k] and ids[k] < 256 + 40)
    with torch.no_grad():  # swap two output rows: the model now says <|im_end|> where it said ids[k]
        w = cm.model.lm_head.weight
        w[[ids[k], im_end]] = w[[im_end, ids[k]]]
    stream = cm.stream(QUESTION, 20, temperature=0)
    assert "".join(stream) == cm.tokenizer.decode(ids[:k])
    assert (stream.finish_reason, stream.completion_tokens) == ("stop", k + 1)
    # without <|im_end|> as a stop token the same model writes on past it (as the special token's text)
    assert IM_END in cm.chat(QUESTION, 20, temperature=0, stop=())


def test_stop_string_cuts_the_text_even_across_pieces():
    cm = tiny_chat_model()
    full = cm.chat(QUESTION, 40, temperature=0, stop=())
    stop = full[len(full) // 2 : len(full) // 2 + 4]
    stream = cm.stream(QUESTION, 40, temperature=0, stop=(stop,))
    assert "".join(stream) == full[: full.index(stop)]
    assert stream.finish_reason == "stop"


def test_stop_strings_hold_back_a_possible_start():
    s = StopStrings(["END"])
    assert s.push("hello E") == ("hello ", False)
    assert s.push("N") == ("", False)
    assert s.push("D and more") == ("", True)
    s = StopStrings(["END"])
    assert s.push("an E") == ("an ", False)
    assert s.push("ast") == ("East", False)
    assert s.push("E") == ("", False) and s.flush() == "E"


@pytest.mark.parametrize("seed", [0, 1])
def test_sampling_is_reproducible_and_matches_generate(seed):
    cm = tiny_chat_model()
    sampling = dict(temperature=0.9, top_k=50, top_p=0.95)
    a = cm.chat(QUESTION, 30, seed=seed, **sampling)
    assert a == cm.chat(QUESTION, 30, seed=seed, **sampling)
    g = torch.Generator().manual_seed(seed)
    ids, _ = reference_answer(cm, QUESTION, 30, generator=g, **sampling)
    assert a == cm.tokenizer.decode(ids)
    others = {cm.chat(QUESTION, 30, seed=s, **sampling) for s in range(2, 6)}
    assert others - {a}, "four other seeds all gave the same answer: the seed is ignored"


def test_max_new_tokens_is_respected():
    cm = tiny_chat_model()
    for n in (1, 5):
        stream = cm.stream(QUESTION, n, temperature=0, stop=())
        text = "".join(stream)
        assert (stream.completion_tokens, stream.finish_reason) == (n, "length")
        assert text == cm.tokenizer.decode(reference_answer(cm, QUESTION, n, temperature=0)[0])
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="max_new_tokens"):
            cm.stream(QUESTION, bad)


def test_answer_never_pushes_the_prompt_out_of_the_context():
    cm = tiny_chat_model(block_size=64)
    stream = cm.stream(QUESTION, 500, temperature=0, stop=())
    list(stream)
    assert stream.prompt_tokens + stream.completion_tokens == 64
    assert stream.finish_reason == "length"


def test_generate_steps_leaves_no_trace_in_the_caller():
    cm = tiny_chat_model()
    cm.model.train()
    steps = cm.model.generate_steps(torch.tensor([[1, 2, 3]]), 5, temperature=0)
    next(steps)
    assert torch.is_grad_enabled() and not cm.model.training  # no_grad inside the steps only
    steps.close()
    assert cm.model.training


# ------------------------------------------------------------------------------------------ prompts


def test_long_conversation_drops_the_oldest_turns_with_a_warning():
    cm = tiny_chat_model(block_size=128)
    system = [{"role": "system", "content": "Be kind."}]
    turns = []
    for k in range(6):
        turns += [{"role": "user", "content": f"Hello {k}!"}, {"role": "assistant", "content": "I am fine."}]
    turns.append({"role": "user", "content": "What is two plus two?"})
    with pytest.warns(UserWarning, match="dropped its"):
        ids = cm.encode_prompt(system + turns, max_new_tokens=8)
    kept = next(k for k in range(len(turns)) if ids == cm.tokenizer.encode(cm.template(system + turns[k:])))
    assert len(ids) + 8 <= 128 < len(cm.tokenizer.encode(cm.template(system + turns[kept - 1 :]))) + 8
    assert 0 < kept < len(turns) - 1  # some but not all dropped; the system message stays (it is in ids)


def test_a_last_message_longer_than_the_context_is_a_clear_error():
    cm = tiny_chat_model(block_size=64)
    with pytest.raises(PromptTooLongError, match="context holds 64"):
        cm.stream(user("the cat sat on the mat " * 30))


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "conversation is empty"),
        ([{"role": "robot", "content": "hi"}], "role 'robot'"),
        ([{"role": "user"}], "message 0 is"),
        ([{"role": "user", "content": 3}], "content must be a str"),
    ],
)
def test_bad_messages_are_rejected(messages, match):
    with pytest.raises(ValueError, match=match):
        tiny_chat_model().chat(messages)


def test_stream_decoder_never_splits_a_character():
    tok = tiny_tokenizer()
    text = "héllo wörld 你好 🙂"
    dec = StreamDecoder(tok)
    pieces = [dec.push(i) for i in tok.encode(text)]
    assert "".join(pieces) + dec.flush() == text
    assert "\ufffd" not in "".join(pieces) and "" in pieces  # partial characters waited
    dec.push(tok.encode("你")[0])  # the first byte of three, then nothing more
    assert dec.flush() == "\ufffd"


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="smollm2"):
        load_chat_model("gpt-17")


# ------------------------------------------------------------------------------------------ command line


@pytest.fixture
def tiny_registered(monkeypatch):
    cm = tiny_chat_model()
    monkeypatch.setitem(chat_mod.CHAT_MODELS, "tiny", lambda device: cm)
    return cm


def test_cli_prompt_answers_once(tiny_registered, capsys):
    args = ["chat", "--model", "tiny", "--prompt", "What is two plus two?", "--temperature", "0"]
    assert main([*args, "--max-new-tokens", "12"]) == 0
    expected = tiny_registered.chat(QUESTION, 12, temperature=0)
    assert capsys.readouterr().out == printable(expected) + "\n"


def test_cli_system_prompt_and_sampling_options_reach_the_model(tiny_registered, capsys):
    args = ["chat", "--model", "tiny", "--prompt", "Hi", "--system", "Be brief.", "--max-new-tokens", "9"]
    assert main([*args, "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--seed", "3"]) == 0
    messages = [{"role": "system", "content": "Be brief."}, *user("Hi")]
    expected = tiny_registered.chat(messages, 9, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    assert capsys.readouterr().out == printable(expected) + "\n"


def test_cli_repl_reads_turns_from_stdin(tiny_registered, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello!\nHow are you?\n/reset\nHello!\n"))
    assert main(["chat", "--model", "tiny", "--temperature", "0", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    cm = tiny_registered
    first = cm.chat(user("Hello!"), 6, temperature=0)
    history = [*user("Hello!"), {"role": "assistant", "content": first}, *user("How are you?")]
    second = cm.chat(history, 6, temperature=0)
    first, second = printable(first), printable(second)
    assert out == f"> {first}\n> {second}\n> > {first}\n> "  # after /reset the history is gone


def test_cli_errors_are_one_line_without_traceback(tiny_registered, capsys):
    assert main(["chat", "--model", "nosuch", "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown chat model 'nosuch'") and "Traceback" not in err
    assert main(["chat", "--model", "tiny", "--prompt", "the cat " * 200]) == 1
    assert "error: " in capsys.readouterr().err


def test_cli_repl_warns_when_it_drops_old_turns(monkeypatch, capsys):
    cm = tiny_chat_model(block_size=128)
    monkeypatch.setitem(chat_mod.CHAT_MODELS, "tiny", lambda device: cm)
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is two plus two?\n" * 4))
    assert main(["chat", "--model", "tiny", "--temperature", "0", "--max-new-tokens", "30"]) == 0
    err = capsys.readouterr().err
    assert "warning: the conversation" in err and "dropped its" in err and "Traceback" not in err


def test_sample_gives_n_answers_greedy_equals_chat_and_a_seed_repeats():
    cm = tiny_chat_model()
    msgs = user("Hello there")
    greedy = cm.chat(msgs, max_new_tokens=12)
    assert cm.sample(msgs, n=3, max_new_tokens=12, temperature=0.0) == [greedy] * 3
    a = cm.sample(msgs, n=4, max_new_tokens=12, temperature=1.5, seed=7)
    assert len(a) == 4 and len(set(a)) > 1  # a random model at temperature 1.5: the samples differ
    assert cm.sample(msgs, n=4, max_new_tokens=12, temperature=1.5, seed=7) == a
    assert all("<|im_end|>" not in s for s in a)
    with pytest.raises(ValueError, match="positive integer"):
        cm.sample(msgs, n=0)
