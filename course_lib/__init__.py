"""course_lib: the implementation behind "Large models from scratch: develop and fine-tune".

One module per idea; notebooks import from here. The modules by layer, the lower layers first
(``help(course_lib.<module>)`` opens one):

Where it runs
    env              device choice, moving batches to it, seeding, fast mode, the cache directory and
                     how a path in it is shown (display_path)
    distributed      what torchrun sets up for data-parallel training

Data
    datasets         the offline corpora (BBC News, Chinese reviews, People's Daily, digits) and splits
    tokenizers       character and byte-level BPE tokenizers, cached tokenizers, a checkpoint's tokenizer
    lm_data          token caches on disk, language-model windows, padded classification batches

Models
    layers           norms, activations, feed-forward blocks, positions; counting parameters
    attention        scaled dot-product and multi-head attention, explicit and fused
    mlp_cnn          the first chapters' neuron, MLP and small CNN
    gpt              the GPT decoder: its config, blocks, parameter count and generation
    encoder          a BERT-style encoder loaded with all-MiniLM-L6-v2
    baselines        count-based (unigram, bigram) language models
    convert          weights to and from transformers' GPT-2 and Llama
    gguf_file        reading GGUF model files; block (de)quantization: Q8_0, Q4_0, Q4_1
    smollm2          SmolLM2-135M-Instruct, a real LLM, loaded into the course's own GPT
    model_costs      memory, compute and data arithmetic: what makes a model large

Training
    checkpoint       crash-safe checkpoints
    trainer          the Trainer, from a CPU notebook to torchrun
    training_basics  the training loop written out by hand (chapter 3)
    initialisation   weight initialisation schemes and the signal statistics through depth
    hparam_search    grid search and the learning-rate range test
    metrics          classification and language-model metrics; result tables
    pretrained       chapter 3's pretrained BBC News GPT, cached for later chapters

Fine-tuning
    heads            pooling, classification heads, freezing
    lora             low-rank adapters
    finetuning       fine-tuning a classifier: what trains, what it costs, how well it does
    instruct         instruction tuning with the prompt masked out of the loss
    preference       preference tuning: the DPO loss and the log-probabilities of answers
    post_training    chat-format SFT examples, held-out splits, label log-likelihoods, DPO loss_fn, adapters
    frozen_trunk     training only the top blocks: the frozen blocks' output cached, SFT and DPO on it
    config           run configs for the command line: sections, files, --set overrides
    runs             pretrain / fine-tune / generate from a config (what the command line runs)

Applications
    generation       sampling text from a GPT, and measures of the samples
    chat_template    ChatML: a conversation as one prompt string (SmolLM2's template)
    fast_decode      greedy decoding for GPUs: static KV caches, one compiled (CUDA-graphed) step
    chat             talking with a chat model: template, streamed answers, the REPL
    serve            an OpenAI-compatible HTTP server for a chat model
    semantic_search  sentence vectors, a searchable index, recall@k and MRR
    rag              retrieval-augmented generation: rule-made questions, prompts with retrieved articles
    ready_models     chapter 5's ready-made classifiers, trained once and cached
    compress         quantization, distillation, pruning
    deploy           saved bundles, exported graphs, throughput, predictions

Course helpers
    display          tables a cell shows: Markdown text for print, an HTML table on screen
    plots            the course's figure style and shared figures
    training_plots   loss curves, optimizer paths, confusion matrices
    widgets          interactive explorers for the notebooks
    exercises        the self-checks of the notebooks' exercises (one module per chapter)
    cli              ``python -m course_lib pretrain|finetune|generate|predict|chat|serve``
"""

from course_lib.env import (
    cache_dir,
    choose_device,
    display_path,
    fast_mode,
    get_device,
    pick,
    seed_everything,
)

__version__ = "0.1.0"

__all__ = ["cache_dir", "choose_device", "display_path", "fast_mode", "get_device", "pick", "seed_everything"]
