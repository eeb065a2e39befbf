// The task page of `dreamshift review`: one image at a time, keyboard first.
// y/n/u answer and move on; x flags unsafe or broken; 1-5 rate naturalness; arrows move;
// z or Backspace undoes the last answer; m shows the object's mask over the image (where
// there is one); Enter opens the next task when this one is done.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let task = null, at = 0, history = [], showMask = false;
// every change goes through one queue, in key order: a fast typist loses no key
let queue = Promise.resolve();
const enqueue = (fn) => { queue = queue.then(fn, fn); return queue; };
const flags = {}, rates = {};

async function post(action, body) {
  const r = await fetch(action, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${action}: ${r.status} ${await r.text()}`);
  return r.json();
}

function say(text) { $("status").textContent = text; }

async function load() {
  const r = await fetch("task", {credentials: "same-origin"});
  if (!r.ok) { say(`cannot load the task: ${r.status}`); return; }
  task = await r.json();
  history = [];
  for (const [id, v] of Object.entries(task.votes)) { flags[id] = v.unsafe; rates[id] = v.naturalness; }
  $("main").hidden = task.items.length === 0;
  $("empty").hidden = task.items.length !== 0;
  $("done").hidden = true;
  $("natural").hidden = !task.naturalness;
  const first = task.items.findIndex((it) => !(it.sample_id in task.votes));
  at = first < 0 ? 0 : first;
  render();
}

// the object's mask over the image: the object tinted, its outline solid (drawn on a canvas:
// the page allows no inline style); `drawn`: the mask URL the canvas holds
const maskImage = new Image();
let drawn = "";
const maskUrl = (it) => `mask/${encodeURIComponent(it.sample_id)}`;
function maskShown() {
  const it = task && task.items[at];
  return !!it && it.mask && showMask && drawn === maskUrl(it);
}
maskImage.addEventListener("load", () => {
  const c = $("mask"), w = maskImage.naturalWidth, h = maskImage.naturalHeight;
  c.width = w; c.height = h;
  const g = c.getContext("2d");
  g.drawImage(maskImage, 0, 0);
  const d = g.getImageData(0, 0, w, h), p = d.data, inside = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) inside[i] = p[4 * i] > 127;
  const on = (x, y) => x >= 0 && y >= 0 && x < w && y < h && inside[y * w + x] === 1;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const edge = !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1));
    p.set(on(x, y) ? [255, 0, 200, edge ? 255 : 90] : [0, 0, 0, 0], 4 * (y * w + x));
  }
  g.putImageData(d, 0, 0);
  drawn = maskImage.getAttribute("src");
  c.hidden = !maskShown();
});

function render() {
  if (!task || task.items.length === 0) return;
  const it = task.items[at], v = task.votes[it.sample_id];
  $("image").src = `image/${encodeURIComponent(it.sample_id)}`;
  $("mask-toggle").hidden = !it.mask;
  $("show-mask").checked = showMask;
  const url = maskUrl(it);
  if (it.mask && showMask && maskImage.getAttribute("src") !== url) maskImage.src = url;
  $("mask").hidden = !maskShown();
  $("guide-fig").hidden = !it.guide;
  if (it.guide) $("guide").src = `guide/${encodeURIComponent(it.sample_id)}`;
  $("cls").textContent = it.class;
  $("definition").textContent = it.definition ? `(${it.definition})` : "";
  $("unsafe").checked = !!flags[it.sample_id];
  for (const b of document.querySelectorAll("[data-rate]"))
    b.classList.toggle("on", rates[it.sample_id] === Number(b.dataset.rate));
  for (const a of ["yes", "no", "unsure"]) $(a).classList.toggle("on", !!v && v.present === a);
  const n = Object.keys(task.votes).length, total = task.items.length;
  $("bar").style.width = `${(100 * n) / total}%`;
  $("count").textContent = `${n} / ${total}`;
  $("position").textContent = `image ${at + 1} of ${total}`;
  const p = task.progress;
  $("overall").textContent = `· dataset: ${p.complete} of ${p.images} images have ${p.votes_per_image} votes`;
  const strip = $("strip");
  strip.replaceChildren(...task.items.map((x, i) => {
    const li = document.createElement("li");
    const vote = task.votes[x.sample_id];
    li.className = (vote ? vote.present : "open") + (i === at ? " here" : "");
    li.title = `${i + 1}: ${vote ? vote.present : "not answered"}`;
    li.addEventListener("click", () => { at = i; render(); });
    return li;
  }));
  $("done").hidden = n < total;
}

async function send(id) {
  const v = task.votes[id];
  const out = await post("vote", {sample_id: id, present: v.present, unsafe: !!flags[id],
                                  naturalness: rates[id] ?? null});
  task.progress = out.progress;
}

async function answer(present) {
  if (!task || task.items.length === 0) return;
  const id = task.items[at].sample_id;
  const previous = task.votes[id] ? {...task.votes[id]} : null;  // what undo puts back
  try {
    task.votes[id] = {present, unsafe: !!flags[id], naturalness: rates[id] ?? null};
    await send(id);
    history.push({id, previous});
    say(`saved: ${present}`);
    const next = task.items.findIndex((it, i) => i > at && !(it.sample_id in task.votes));
    const any = task.items.findIndex((it) => !(it.sample_id in task.votes));
    at = next >= 0 ? next : any >= 0 ? any : at;
  } catch (e) {
    if (previous) task.votes[id] = previous; else delete task.votes[id];
    say(String(e));
  }
  render();
}

async function update(id) {  // a flag or a rating changed on an answered image
  if (id in task.votes) { try { await send(id); say("saved"); } catch (e) { say(String(e)); } }
  render();
}

async function undo() {
  if (history.length === 0) return;
  const last = history.pop(), id = last.id;
  try {
    if (last.previous) {  // a changed answer: the earlier one comes back
      task.votes[id] = last.previous;
      flags[id] = last.previous.unsafe;
      rates[id] = last.previous.naturalness;
      await send(id);
    } else {
      await post("undo", {sample_id: id});
      delete task.votes[id];
    }
    at = task.items.findIndex((it) => it.sample_id === id);
    say("undone");
  } catch (e) { history.push(last); say(String(e)); }
  render();
}

function move(step) {
  if (!task || task.items.length === 0) return;
  at = Math.min(task.items.length - 1, Math.max(0, at + step));
  render();
}

function toggleFlag() {
  const id = task.items[at].sample_id;
  flags[id] = !flags[id];
  return update(id);
}

function rate(n) {
  if (!task.naturalness) return;
  const id = task.items[at].sample_id;
  rates[id] = n;
  return update(id);
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || !task) return;
  const k = e.key.toLowerCase();
  if (k === "y") enqueue(() => answer("yes"));
  else if (k === "n") enqueue(() => answer("no"));
  else if (k === "u") enqueue(() => answer("unsure"));
  else if (k === "x") enqueue(toggleFlag);
  else if (k === "m") enqueue(() => { showMask = !showMask; render(); });
  else if ("12345".includes(k) && k.length === 1) enqueue(() => rate(Number(k)));
  else if (k === "arrowleft") enqueue(() => move(-1));
  else if (k === "arrowright") enqueue(() => move(1));
  else if (k === "z" || k === "backspace") enqueue(undo);
  else if (k === "enter") enqueue(() => $("done").hidden ? null : load());
  else return;
  e.preventDefault();
});
$("yes").addEventListener("click", () => enqueue(() => answer("yes")));
$("no").addEventListener("click", () => enqueue(() => answer("no")));
$("unsure").addEventListener("click", () => enqueue(() => answer("unsure")));
$("unsafe").addEventListener("change", (e) => enqueue(() => {
  flags[task.items[at].sample_id] = !!e.target.checked;
  return update(task.items[at].sample_id);
}));
$("show-mask").addEventListener("change", (e) => enqueue(() => {
  showMask = !!e.target.checked;
  render();
}));
for (const b of document.querySelectorAll("[data-rate]"))
  b.addEventListener("click", () => enqueue(() => rate(Number(b.dataset.rate))));
$("prev").addEventListener("click", () => enqueue(() => move(-1)));
$("next").addEventListener("click", () => enqueue(() => move(1)));
$("undo").addEventListener("click", () => enqueue(undo));
$("more").addEventListener("click", () => enqueue(load));
enqueue(load);
