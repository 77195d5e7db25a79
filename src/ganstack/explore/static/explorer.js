// ganstack explore: one sample of a trained stack, level by level. Plain JavaScript, no
// dependencies: the page talks only to the server it came from (/api/model, /api/sample).
"use strict";

const state = {
  model: null,
  seeds: {},      // noise input -> seed ("hold" keeps it, "resample" draws a new one)
  held: {},       // noise input -> true when held
  y: 0,
  caption: "",
  textSeed: 0,    // picks a training caption when no caption is typed
  interp: { input: "", seedB: 0, t: 0.5, strip: 8 },
  inFlight: false,
  pending: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k === "for" || k === "title" || k === "list") {
      node.setAttribute(k, v);
    } else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function newSeed() {
  return Math.floor(Math.random() * 2147483647);
}

function affectsText(names) {
  return names.length ? "changes: " + names.join(", ") : "changes no output";
}

function seedControl(label, key, get, set, extra) {
  // A seed box, a resample button and (for noise) a hold box: one control per level.
  const box = el("div", { className: "level", "data-level": key });
  box.append(el("span", { className: "name", text: label }));
  const input = el("input", { type: "number", min: 0, max: Number.MAX_SAFE_INTEGER, step: 1,
                              value: get(),
                              "data-seed": key, title: "the seed this input is drawn from" });
  input.addEventListener("change", () => {
    const v = Number(input.value);
    if (Number.isSafeInteger(v) && v >= 0) { set(v); render(); } else input.value = get();
  });
  const button = el("button", { text: "resample", "data-resample": key,
                                title: "draw this input again (a new seed)" });
  button.addEventListener("click", () => { set(newSeed()); input.value = get(); render(); });
  box.append(input, button);
  if (extra) extra(box);
  return { box, input };
}

function buildControls(m) {
  $("about").textContent = `${m.model} · ${m.source} · step ${m.step}` +
    (m.checkpoint ? ` (${m.checkpoint})` : "") + (m.data ? ` · data ${m.data}` : "");
  const cond = $("condition");
  if (m.classes.length) {
    const select = el("select", { id: "class", title: "the class y" });
    m.classes.forEach((name, k) => select.append(el("option", { value: k, text: name })));
    select.addEventListener("change", () => { state.y = Number(select.value); render(); });
    cond.append(el("h2", { text: "Class" }),
                el("div", { className: "level" }, select,
                   el("p", { className: "affects", text: affectsText(m.class_affects) })));
  }
  if (m.text) {
    cond.append(el("h2", { text: "Caption" }));
    const box = el("div", { className: "level" });
    if (m.can_caption) {
      const list = el("datalist", { id: "caption-examples" });
      m.example_captions.forEach((c) => list.append(el("option", { value: c })));
      const input = el("input", { id: "caption", type: "text", list: "caption-examples",
                                  placeholder: "type a caption, then Enter" });
      state.caption = m.example_captions[0] || "";
      input.value = state.caption;
      input.addEventListener("change", () => { state.caption = input.value.trim(); render(); });
      box.append(input, el("p", { className: "help",
        text: "Empty: a training caption, picked by the seed below." }));
    }
    cond.append(box);
    const pick = seedControl("caption seed", "text", () => state.textSeed,
                             (v) => { state.textSeed = v; });
    pick.box.append(el("p", { className: "affects", text: affectsText(m.text_affects) }));
    cond.append(pick.box);
  }
  const levels = $("levels");
  const interpSelect = $("interp-input");
  m.levels.forEach((lv, i) => {
    state.seeds[lv.name] = i + 1;
    state.held[lv.name] = false;
    const ctl = seedControl(lv.name, lv.name, () => state.seeds[lv.name],
                            (v) => { state.seeds[lv.name] = v; }, (box) => {
      const hold = el("input", { type: "checkbox", "data-hold": lv.name,
                                 title: "keep this level's noise when resampling all" });
      hold.addEventListener("change", () => {
        state.held[lv.name] = hold.checked;
        box.classList.toggle("held", hold.checked);
      });
      box.append(el("label", {}, hold, " hold"),
                 el("p", { className: "help", text: `${lv.help} (${lv.dim}-d)` }),
                 el("p", { className: "affects", text: affectsText(lv.affects) }));
    });
    levels.append(ctl.box);
    interpSelect.append(el("option", { value: lv.name, text: lv.name }));
  });
  $("resample-all").addEventListener("click", resampleAll);
  document.addEventListener("keydown", (e) => {
    if (e.key === "r" && !(e.target instanceof HTMLInputElement) &&
        !(e.target instanceof HTMLSelectElement)) resampleAll();
  });
  const seedB = $("interp-seed");
  state.interp.seedB = newSeed();
  seedB.value = state.interp.seedB;
  interpSelect.addEventListener("change", () => { state.interp.input = interpSelect.value; render(); });
  seedB.addEventListener("change", () => {
    const v = Number(seedB.value);
    if (Number.isSafeInteger(v) && v >= 0) state.interp.seedB = v;
    else seedB.value = state.interp.seedB;
    if (state.interp.input) render();
  });
  $("interp-new").addEventListener("click", () => {
    state.interp.seedB = newSeed();
    seedB.value = state.interp.seedB;
    if (state.interp.input) render();
  });
  const t = $("interp-t");
  t.max = 1;
  t.addEventListener("input", () => {
    state.interp.t = Number(t.value);
    $("interp-t-value").textContent = t.value;
    if (state.interp.input) render();
  });
  const strip = $("interp-strip");
  strip.max = m.strip_max;
  strip.addEventListener("change", () => {
    state.interp.strip = Math.max(0, Math.min(m.strip_max, Number.parseInt(strip.value, 10) || 0));
    strip.value = state.interp.strip;
    if (state.interp.input) render();
  });
  const outputs = $("outputs");
  for (const o of m.outputs) {
    const img = el("img", { id: `out-${o.name}`, alt: o.name, "data-output": o.name });
    const size = o.kind === "image" ? `${o.width}×${o.height}` : `${o.shape.join("×")} features`;
    outputs.append(el("figure", { "data-figure": o.name }, img,
                      el("figcaption", { text: `${o.name} (${size})` })));
  }
  $("same-size").addEventListener("change", layout);
  layout();
}

function resampleAll() {
  for (const name of Object.keys(state.seeds)) {
    if (!state.held[name]) {
      state.seeds[name] = newSeed();
      document.querySelector(`[data-seed="${name}"]`).value = state.seeds[name];
    }
  }
  render();
}

function layout() {
  // Every output at the finest one's display size, or each at its own size (same scale).
  const m = state.model;
  const finest = m.outputs[m.outputs.length - 1];
  const scale = Math.max(1, Math.floor(192 / Math.max(finest.width, finest.height)));
  const same = $("same-size").checked;
  for (const o of m.outputs) {
    const img = $(`out-${o.name}`);
    const f = same ? (finest.width * scale) / o.width : scale;
    img.style.width = `${Math.round(o.width * f)}px`;
    img.style.height = `${Math.round(o.height * f)}px`;
  }
}

function request() {
  const body = { seeds: state.seeds };
  if (state.model.classes.length) body.y = state.y;
  if (state.model.text) {
    body.text_seed = state.textSeed;
    if (state.caption) body.caption = state.caption;
  }
  if (state.interp.input) {
    body.interpolate = { input: state.interp.input, seed_b: state.interp.seedB,
                         t: state.interp.t, strip: state.interp.strip };
  }
  return body;
}

async function render() {
  // One request at a time; changes made meanwhile are sent together when it returns.
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  document.body.dataset.state = "busy";
  try {
    const res = await fetch("/api/sample", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request()),
    });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    $("error").hidden = true;
    for (const [name, url] of Object.entries(data.outputs)) {
      const img = $(`out-${name}`);
      const changed = img.src !== "" && img.getAttribute("src") !== url;
      img.closest("figure").classList.toggle("changed", changed);
      img.src = url;
    }
    const box = $("strip-box");
    box.hidden = !data.strip;
    const strip = $("strip");
    strip.replaceChildren();
    if (data.strip) {
      $("strip-label").textContent =
        `${state.interp.input} from seed ${state.seeds[state.interp.input]} to ${state.interp.seedB}`;
      data.strip.forEach((url, i) => strip.append(el("img", { src: url, "data-step": i })));
    }
    $("timing").textContent = `${data.ms} ms`;
  } catch (err) {
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  } finally {
    state.inFlight = false;
    document.body.dataset.renders = String(Number(document.body.dataset.renders) + 1);
    document.body.dataset.state = state.pending ? "busy" : "idle";
    if (state.pending) { state.pending = false; render(); }
  }
}

async function start() {
  try {
    const res = await fetch("/api/model");
    state.model = await res.json();
    buildControls(state.model);
    await render();
  } catch (err) {
    $("error").textContent = `cannot load the model: ${err.message || err}`;
    $("error").hidden = false;
    document.body.dataset.state = "idle";
  }
}

start();
