"use strict";
// The page of medassist serve: no framework and nothing from the internet; every answer comes from this service.

const $ = (id) => document.getElementById(id);
const KEY = "medassist-api-key"; // kept in this tab's session storage only: gone when the tab closes

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: "Bearer " + key } : {};
}

async function call(url, options = {}) {
  const response = await fetch(url, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    askForKey("The service refused the key: enter a valid API key.");
  }
  return response;
}

function askForKey(message) {
  $("key-panel").hidden = false;
  $("key-message").textContent = message || "";
  $("api-key").focus();
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function bars(container, rows) {
  container.replaceChildren();
  for (const row of rows) {
    const bar = document.createElement("div");
    bar.className = "bar" + (row.present ? " present" : "") + (row.status === "uncertain" ? " uncertain" : "");
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * row.probability).toFixed(1));
    bar.setAttribute("aria-label", row.label);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = row.label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * row.probability).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * row.probability).toFixed(1) + "%" + (row.status ? " \u2014 " + row.status : "");
    bar.append(name, track, value);
    container.appendChild(bar);
  }
}

function refer(el, answer) {
  el.hidden = !answer.abstained;
  el.textContent = answer.abstained ? "Refer to a clinician \u2014 " + answer.reason : "";
}

async function problem(response) {
  try {
    const body = await response.json();
    const detail = body.detail;
    return typeof detail === "string" ? detail : detail.map((d) => d.loc.join(".") + ": " + d.msg).join("; ");
  } catch (e) {
    return "the service answered " + response.status;
  }
}

async function loadModels() {
  const response = await call("/v1/models");
  if (!response.ok) {
    if (response.status !== 401) showError("The model list could not be read: " + (await problem(response)));
    return;
  }
  $("key-panel").hidden = true;
  const body = await response.json();
  const cards = $("cards");
  cards.replaceChildren();
  const kinds = [
    ["image", $("image-model")], ["text", $("report-model")], ["segmentation", $("segment-model")],
    ["detection", $("detect-model")],
  ];
  for (const [kind, select] of kinds) {
    const models = body.models.filter((m) => m.kind === kind);
    select.replaceChildren(...models.map((m) => {
      const option = new Option(m.title + (m.default ? "" : " (not the default)"), m.id + "@" + m.version);
      option.title = m.name;
      return option;
    }));
    select.disabled = models.length === 0;
    $({
      image: "image-submit", text: "report-submit", segmentation: "segment-submit", detection: "detect-submit",
    }[kind]).disabled = models.length === 0;
    // A section only for the kinds of model this service serves.
    $({
      image: "image-section", text: "report-section", segmentation: "segment-section", detection: "detect-section",
    }[kind]).hidden = models.length === 0;
  }
  for (const m of body.models) {
    const card = document.createElement("article");
    card.className = "card";
    const title = document.createElement("h3");
    title.textContent = m.title;
    const technical = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Technical name";
    const name = document.createElement("p");
    name.textContent = m.name + " (id " + m.id + ", version " + m.version + ", " + m.kind + " model)";
    technical.append(summary, name);
    const text = document.createElement("div");
    text.className = "model-card";
    if (m.model_card) text.innerHTML = m.model_card; // HTML made by the service from the bundle's verified card
    else text.textContent = "No model card in this bundle.";
    card.append(title, technical, text);
    cards.appendChild(card);
  }
}

function chosen(select) {
  const [model, version] = select.value.split("@");
  return { model, version };
}

async function sendImage(file) {
  showError("");
  const form = new FormData();
  form.append("file", file);
  if ($("image-model").value) {
    const { model, version } = chosen($("image-model"));
    form.append("model", model);
    form.append("version", version);
  }
  const response = await call("/v1/images", { method: "POST", body: form });
  if (!response.ok) {
    $("image-result").hidden = true;
    showError("Image refused: " + (await problem(response)));
    return;
  }
  const answer = await response.json();
  $("image-label").textContent = answer.label;
  $("image-confidence").textContent = "(confidence " + (100 * answer.confidence).toFixed(1) + "%)";
  refer($("image-refer"), answer);
  bars($("image-bars"), Object.entries(answer.probabilities).map(([label, probability]) =>
    ({ label, probability, present: label === answer.label })));
  const figure = $("image-heatmap-figure");
  figure.hidden = !answer.overlay_png;
  if (answer.overlay_png) $("image-heatmap").src = answer.overlay_png;
  $("image-meta").textContent = answer.model.title + "; " +
    answer.latency_ms.toFixed(1) + " ms";
  $("image-result").hidden = false;
  $("image-result").dataset.done = "1";
}

async function sendReport(text) {
  showError("");
  const body = { text };
  if ($("report-model").value) Object.assign(body, chosen($("report-model")));
  const response = await call("/v1/reports", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    $("report-result").hidden = true;
    showError("Report refused: " + (await problem(response)));
    return;
  }
  const answer = await response.json();
  const present = answer.findings.filter((f) => f.status === "present").map((f) => f.label);
  $("report-label").textContent = present.length ? present.join(", ") : "none answered present";
  $("report-confidence").textContent = "(confidence " + (100 * answer.confidence).toFixed(1) + "%)";
  refer($("report-refer"), answer);
  bars($("report-bars"), answer.findings);
  $("report-meta").textContent = answer.model.title + "; " +
    answer.latency_ms.toFixed(1) + " ms";
  $("report-result").hidden = false;
  $("report-result").dataset.done = "1";
}

async function sendSegmentation(file) {
  showError("");
  const form = new FormData();
  form.append("file", file);
  const { model, version } = chosen($("segment-model"));
  form.append("model", model);
  form.append("version", version);
  const response = await call("/v1/segmentations", { method: "POST", body: form });
  if (!response.ok) {
    $("segment-result").hidden = true;
    showError("Image refused: " + (await problem(response)));
    return;
  }
  const answer = await response.json();
  const areas = Object.entries(answer.area_pixels).map(([label, pixels]) =>
    label + " " + pixels.toLocaleString() + " pixels" +
    (answer.area_mm2 ? " (" + answer.area_mm2[label].toFixed(2) + " mm\u00b2)" : ""));
  $("segment-area").textContent = areas.join("; ");
  $("segment-overlay").src = answer.overlay_png;
  $("segment-meta").textContent = answer.model.title + "; " + answer.latency_ms.toFixed(1) + " ms";
  $("segment-result").hidden = false;
  $("segment-result").dataset.done = "1";
}

async function sendDetection(file) {
  showError("");
  const form = new FormData();
  form.append("file", file);
  const { model, version } = chosen($("detect-model"));
  form.append("model", model);
  form.append("version", version);
  const response = await call("/v1/detections", { method: "POST", body: form });
  if (!response.ok) {
    $("detect-result").hidden = true;
    showError("Image refused: " + (await problem(response)));
    return;
  }
  const answer = await response.json();
  $("detect-counts").textContent = Object.entries(answer.counts).map(([label, n]) => label + " " + n).join("; ");
  $("detect-boxes").src = answer.boxes_png;
  $("detect-meta").textContent = answer.model.title + "; " + answer.latency_ms.toFixed(1) + " ms";
  $("detect-result").hidden = false;
  $("detect-result").dataset.done = "1";
}

$("detect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("detect-file").files[0];
  if (!file) { showError("Choose an image file first."); return; }
  sendDetection(file);
});
$("segment-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("segment-file").files[0];
  if (!file) { showError("Choose an image file first."); return; }
  sendSegmentation(file);
});
$("image-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("image-file").files[0];
  if (!file) { showError("Choose an image file first."); return; }
  sendImage(file);
});
$("report-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sendReport($("report-text").value);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) sendImage(event.dataTransfer.files[0]);
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) { askForKey("Enter the API key you were given."); return; }
  sessionStorage.setItem(KEY, key);
  $("api-key").value = "";
  loadModels().catch(() => showError("The model list could not be read from the service."));
});

async function start() {
  const health = await (await fetch("/healthz")).json();
  $("no-auth").hidden = health.auth !== "none";
  if (health.auth === "api-key" && !sessionStorage.getItem(KEY)) {
    askForKey("This service needs an API key.");
    return;
  }
  await loadModels();
}
start().catch(() => showError("The model list could not be read from the service."));
