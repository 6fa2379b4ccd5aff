//! The lab's HTML report: one self-contained page (no network, inline CSS and JS, the data
//! inlined as JSON) that draws the run as an SVG timeline — a lane per node with its pods,
//! cordon and termination, the ready endpoints per Service, and requests per second with every
//! failure colored by cause. A person sees at a glance where requests were lost and why; the
//! file can be attached to an issue or a review and opened anywhere.

use serde_json::{Value, json};

/// Renders the page from [`crate::timeline::Timeline::to_json`] and the run's summary (the
/// `--output json` object: `mode`, `dataplane`, `nodes`, `nodes_replaced`, `requests {sent, ok,
/// failed, by_cause, by_service}`, `phases [{name, seconds}]`, `kernel {sep_packets,
/// conntrack_kept}`; missing keys are left out of the page).
///
/// When the inline script has drawn the chart it sets `data-rendered="true"` and
/// `data-marks="<marks drawn>"` on `<svg id="timeline">`, which is how a headless browser
/// test knows the page works.
pub fn render(timeline_json: &Value, summary_json: &Value) -> String {
    let data = json!({"timeline": timeline_json, "summary": summary_json});
    // Inside <script> only `</script` and `<!--` could end or confuse the element; with every
    // `<` escaped (still valid JSON) no string in the data can.
    let inline = data.to_string().replace('<', "\\u003c");
    let mut page = String::with_capacity(PAGE_HEAD.len() + inline.len() + PAGE_TAIL.len());
    page.push_str(PAGE_HEAD);
    page.push_str(&inline);
    page.push_str(PAGE_TAIL);
    page
}

const PAGE_HEAD: &str = r###"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>quiesce lab</title>
<style>
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2330; background: #fff; }
  h1 { font-size: 22px; margin: 0 0 6px; }
  .verdict { font-size: 18px; margin: 4px 0 10px; }
  .ok { color: #1a7f37; } .bad { color: #c62828; }
  .chips span { display: inline-block; margin: 0 6px 6px 0; padding: 2px 8px; border-radius: 10px; color: #fff; font-size: 13px; }
  table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
  td, th { padding: 2px 10px; border-bottom: 1px solid #e3e6ea; text-align: right; }
  td:first-child, th:first-child { text-align: left; }
  .row { display: flex; gap: 40px; flex-wrap: wrap; }
  svg#timeline { width: 100%; height: auto; display: block; border: 1px solid #e3e6ea; }
  svg text { font: 11px system-ui, sans-serif; fill: #333; }
  svg text.lane { font-size: 12px; font-weight: 600; }
  svg text.panel { font-size: 12px; font-weight: 600; fill: #555; }
  .note { color: #666; font-size: 12px; }
</style>
</head>
<body>
<h1 id="title">quiesce lab</h1>
<div class="verdict" id="verdict"></div>
<div class="chips" id="causes"></div>
<div class="row"><div id="services"></div><div id="phases"></div></div>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline of the lab run"></svg>
<p class="note">Each lane is a node: grey while it exists, orange once cordoned (draining), a red line when terminated.
Pod bars are colored by workload: pale while starting, solid while Ready, hatched while terminating; a blue tick is the preStop hook, a black tick the SIGTERM to the container's PID 1, a dot the process's exit (green for exit 0, red otherwise), a red triangle an eviction; a diamond under the endpoints is an iptables sync of the Service's rules.
Hover any mark for details.</p>
<script type="application/json" id="lab-data">"###;

const PAGE_TAIL: &str = r###"</script>
<script>
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("lab-data").textContent);
  var tl = data.timeline || {}, sum = data.summary || {};
  var events = (tl.events || []).slice().sort(function (a, b) { return a.t - b.t; });
  var reqs = tl.requests || [];
  var step = tl.bucket_seconds || 0.25;
  var end = tl.duration || 0;
  events.forEach(function (e) { end = Math.max(end, e.t); });
  reqs.forEach(function (r) { end = Math.max(end, r.t + step); });
  if (!(end > 0)) end = 1;

  var CAUSE = { refused: "#c62828", reset: "#ef6c00", "5xx": "#6a1b9a", timeout: "#795548" };
  var PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f"];
  var colors = {};
  function color(name) {
    if (!(name in colors)) colors[name] = PALETTE[Object.keys(colors).length % PALETTE.length];
    return colors[name];
  }
  function causeColor(c) { return CAUSE[c] || "#555"; }
  function s(t) { return (Math.round(t * 10) / 10).toFixed(1) + " s"; }

  // ---- header ----
  var req = sum.requests || {};
  var mode = sum.mode || "";
  var plane = sum.dataplane ? ", " + sum.dataplane + " data plane" : "";
  document.getElementById("title").textContent = "quiesce lab" + (mode ? " \u2014 mode " + mode + plane : "");
  document.title = document.getElementById("title").textContent;
  var verdict = document.getElementById("verdict");
  var parts = [];
  if (sum.nodes_replaced !== undefined) parts.push(sum.nodes_replaced + (sum.nodes !== undefined ? " of " + sum.nodes : "") + " nodes replaced");
  if (req.sent !== undefined) parts.push(req.sent + " requests sent");
  if (sum.kernel) parts.push(sum.kernel.sep_packets + " connections through KUBE-SEP rules, " + sum.kernel.conntrack_kept + " kept by conntrack");
  verdict.appendChild(document.createTextNode(parts.join(" \u00b7 ") + (parts.length ? " \u00b7 " : "")));
  if (req.failed !== undefined) {
    var f = document.createElement("b");
    f.className = req.failed > 0 ? "bad" : "ok";
    f.textContent = req.failed + " failed";
    verdict.appendChild(f);
  }
  var chips = document.getElementById("causes");
  Object.keys(req.by_cause || {}).forEach(function (c) {
    var sp = document.createElement("span");
    sp.style.background = causeColor(c);
    sp.textContent = c + ": " + req.by_cause[c];
    chips.appendChild(sp);
  });
  function table(parent, head, rows) {
    if (!rows.length) return;
    var t = document.createElement("table"), tr = document.createElement("tr");
    head.forEach(function (h) { var th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var tr2 = document.createElement("tr");
      r.forEach(function (v) { var td = document.createElement("td"); td.textContent = v; tr2.appendChild(td); });
      t.appendChild(tr2);
    });
    parent.appendChild(t);
  }
  var bySvc = req.by_service || {};
  table(document.getElementById("services"), ["service", "sent", "ok", "failed", "causes"],
    Object.keys(bySvc).map(function (k) {
      var v = bySvc[k] || {}, bc = v.by_cause || {};
      return [k, v.sent, v.ok, v.failed, Object.keys(bc).map(function (c) { return c + " " + bc[c]; }).join(", ")];
    }));
  // phases: [{name, seconds}] in order (or a {name: seconds} map)
  var phases = sum.phases || [];
  var phaseRows = Array.isArray(phases)
    ? phases.map(function (p) { return [p.name, (+p.seconds).toFixed(1)]; })
    : Object.keys(phases).map(function (k) { return [k, (+phases[k]).toFixed(1)]; });
  table(document.getElementById("phases"), ["phase", "seconds"], phaseRows);

  // ---- model ----
  var nodes = {}, nodeOrder = [], pods = {}, podOrder = [], endpoints = {}, rules = [], evictions = [], others = [], faults = [];
  function node(name) {
    if (!nodes[name]) { nodes[name] = { name: name, others: [] }; nodeOrder.push(name); }
    return nodes[name];
  }
  // A StatefulSet's replacement reuses its pod's name: a name seen again after it was gone,
  // or on another node, is a new pod with its own bar.
  var incarnation = {};
  function pod(name, d) {
    d = d || {};
    var key = incarnation[name] || name;
    var old = pods[key];
    if (old && (old.gone !== undefined || (d.node && old.node && d.node !== old.node))) {
      key = name + "#" + (podOrder.length + 1);
    }
    incarnation[name] = key;
    if (!pods[key]) { pods[key] = { key: key, name: name }; podOrder.push(key); }
    var p = pods[key];
    if (d.node && !p.node) p.node = d.node;
    if (d.workload && !p.workload) p.workload = d.workload;
    return p;
  }
  function first(o, k, t) { if (o[k] === undefined) o[k] = t; }
  events.forEach(function (e) {
    var d = e.detail || {};
    switch (e.kind) {
      case "node-launched": first(node(e.subject), "launched", e.t); break;
      case "node-ready": first(node(e.subject), "ready", e.t); break;
      case "node-cordoned": first(node(e.subject), "cordoned", e.t); break;
      case "node-uncordoned": node(e.subject).uncordoned = e.t; break;
      case "node-terminated": first(node(e.subject), "terminated", e.t); break;
      case "pod-scheduled": first(pod(e.subject, d), "scheduled", e.t); break;
      case "pod-ready": first(pod(e.subject, d), "ready", e.t); break;
      case "pod-terminating": first(pod(e.subject, d), "terminating", e.t); break;
      case "pod-gone": first(pod(e.subject, d), "gone", e.t); break;
      case "prestop": first(pod(e.subject, d), "prestop", e.t); break;
      case "sigterm": first(pod(e.subject, d), "sigterm", e.t); break;
      case "process-exited": first(pod(e.subject, d), "exited", e.t); pod(e.subject, d).exit = d.status; break;
      case "container-log": break;
      case "rules": rules.push(e); break;
      case "eviction": evictions.push(e); break;
      case "endpoints": (endpoints[e.subject] = endpoints[e.subject] || []).push([e.t, +(d.ready || 0)]); break;
      case "fault": case "drainer-stopped": faults.push(e); break;
      default: others.push(e);
    }
  });
  podOrder.forEach(function (k) { var p = pods[k]; if (p.node) node(p.node); });
  others.forEach(function (e) { if (nodes[e.subject]) nodes[e.subject].others.push(e); });
  nodeOrder.sort(function (a, b) {
    var la = nodes[a].launched, lb = nodes[b].launched;
    la = la === undefined ? -1 : la; lb = lb === undefined ? -1 : lb;
    return la - lb || (a < b ? -1 : a > b ? 1 : 0);
  });

  // ---- drawing ----
  var svg = document.getElementById("timeline");
  var W = 1200, L = 160, R = 24, plotW = W - L - R, ROW = 12, marks = 0;
  function x(t) { return L + Math.max(0, Math.min(t, end)) / end * plotW; }
  function el(tag, attrs, title, parent) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) n.setAttribute(k, attrs[k]);
    if (title) { var t = document.createElementNS(NS, "title"); t.textContent = title; n.appendChild(t); }
    (parent || svg).appendChild(n);
    return n;
  }
  function mark(tag, attrs, title) { marks++; return el(tag, attrs, title); }
  function text(xx, yy, str, cls, anchor) {
    var n = el("text", { x: xx, y: yy, "class": cls || "", "text-anchor": anchor || "start" });
    n.textContent = str;
    return n;
  }
  var defs = el("defs", {});
  var pat = el("pattern", { id: "hatch", width: 4, height: 4, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, null, defs);
  el("rect", { width: 4, height: 4, fill: "#fff", "fill-opacity": 0.55 }, null, pat);
  el("line", { x1: 0, y1: 0, x2: 0, y2: 4, stroke: "#fff", "stroke-width": 2 }, null, pat);

  // time axis
  var y = 18;
  var tick = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].filter(function (v) { return end / v <= 14; })[0] || 600;
  for (var t = 0; t <= end + 1e-9; t += tick) {
    el("line", { x1: x(t), x2: x(t), y1: y + 4, y2: y + 10, stroke: "#999" });
    text(x(t), y, t + " s", "", "middle");
  }
  var gridTop = y + 10;
  y += 22;

  // the chaos lab's faults (API and AWS, where they hit) and drainer stops: one row
  if (faults.length) {
    text(8, y + 8, "faults", "panel");
    faults.forEach(function (e) {
      var stop = e.kind === "drainer-stopped";
      mark("path", { d: "M" + (x(e.t) - 4) + " " + y + " l8 10 m0 -10 l-8 10", stroke: stop ? "#6a1b9a" : "#c62828", "stroke-width": 2 },
        (stop ? "drainer stopped" : "fault " + ((e.detail || {}).kind || e.subject)) + " at " + s(e.t) + " " + JSON.stringify(e.detail || {}));
    });
    y += 34;
  }

  // events that belong to no node (the group's, the run's phases): one row of markers
  var loose = others.filter(function (e) { return !nodes[e.subject]; });
  if (loose.length) {
    text(8, y + 8, "events", "panel");
    loose.forEach(function (e) {
      mark("path", { d: "M" + x(e.t) + " " + y + " l4 5 l-4 5 l-4 -5 z", fill: "#37474f" },
        e.kind + " " + e.subject + " at " + s(e.t) + " " + JSON.stringify(e.detail || {}));
    });
    y += 34;
  }

  // node lanes
  var LANE_GAP = 6;
  text(8, y - 6, "nodes and pods", "panel");
  nodeOrder.forEach(function (name) {
    var n = nodes[name];
    var mine = podOrder.map(function (k) { return pods[k]; }).filter(function (p) { return p.node === name; });
    mine.forEach(function (p) {
      p.start = [p.scheduled, p.ready, p.terminating, p.gone].filter(function (v) { return v !== undefined; })[0];
      if (p.start === undefined) p.start = 0;
      p.end = p.gone !== undefined ? p.gone : end;
    });
    mine.sort(function (a, b) { return a.start - b.start; });
    var rows = [];
    mine.forEach(function (p) {
      var r = 0;
      while (r < rows.length && rows[r] > p.start - 0.05) r++;
      rows[r] = p.end;
      p.row = r;
    });
    var h = Math.max(1, rows.length) * ROW + 10;
    var t0 = n.launched !== undefined ? n.launched : 0;
    var t1 = n.terminated !== undefined ? n.terminated : end;
    text(8, y + h / 2 + 4, name, "lane");
    mark("rect", { x: x(t0), y: y, width: Math.max(1, x(t1) - x(t0)), height: h, fill: "#eef1f5", stroke: "#cfd6de" },
      name + ": launched " + s(t0) + (n.ready !== undefined ? ", Ready " + s(n.ready) : "") + (n.terminated !== undefined ? ", terminated " + s(n.terminated) : ""));
    if (n.cordoned !== undefined) {
      var c1 = n.terminated !== undefined ? n.terminated : (n.uncordoned !== undefined && n.uncordoned > n.cordoned ? n.uncordoned : end);
      mark("rect", { x: x(n.cordoned), y: y, width: Math.max(1, x(c1) - x(n.cordoned)), height: h, fill: "#ff9800", "fill-opacity": 0.22, stroke: "#ef6c00", "stroke-opacity": 0.5 },
        name + ": cordoned (draining) from " + s(n.cordoned));
    }
    if (n.ready !== undefined) mark("circle", { cx: x(n.ready), cy: y, r: 3, fill: "#1a7f37" }, name + ": Ready at " + s(n.ready));
    if (n.terminated !== undefined) mark("line", { x1: x(n.terminated), x2: x(n.terminated), y1: y - 3, y2: y + h + 3, stroke: "#c62828", "stroke-width": 2.5 }, name + ": terminated at " + s(n.terminated));
    n.others.forEach(function (e) {
      mark("path", { d: "M" + x(e.t) + " " + (y - 4) + " l3 4 l-3 4 l-3 -4 z", fill: "#455a64" }, name + ": " + e.kind + " at " + s(e.t) + " " + JSON.stringify(e.detail || {}));
    });
    mine.forEach(function (p) {
      var py = y + 5 + p.row * ROW, ph = ROW - 3, col = color(p.workload || p.key);
      var label = p.name + " (" + (p.workload || "?") + ")";
      var readyAt = p.ready !== undefined ? p.ready : (p.terminating !== undefined ? p.terminating : p.end);
      var termAt = p.terminating !== undefined ? p.terminating : p.end;
      if (readyAt > p.start) mark("rect", { x: x(p.start), y: py, width: Math.max(1, x(readyAt) - x(p.start)), height: ph, fill: col, "fill-opacity": 0.3 }, label + ": starting " + s(p.start));
      if (p.ready !== undefined && termAt > p.ready) mark("rect", { x: x(p.ready), y: py, width: Math.max(1, x(termAt) - x(p.ready)), height: ph, fill: col }, label + ": Ready " + s(p.ready) + "\u2013" + s(termAt));
      if (p.terminating !== undefined) {
        mark("rect", { x: x(p.terminating), y: py, width: Math.max(1.5, x(p.end) - x(p.terminating)), height: ph, fill: col }, label + ": terminating " + s(p.terminating) + (p.gone !== undefined ? ", gone " + s(p.gone) : ""));
        el("rect", { x: x(p.terminating), y: py, width: Math.max(1.5, x(p.end) - x(p.terminating)), height: ph, fill: "url(#hatch)" });
      }
      if (p.prestop !== undefined) mark("line", { x1: x(p.prestop), x2: x(p.prestop), y1: py - 1, y2: py + ph + 1, stroke: "#0969da", "stroke-width": 1.5 }, label + ": preStop hook at " + s(p.prestop));
      if (p.sigterm !== undefined) mark("line", { x1: x(p.sigterm), x2: x(p.sigterm), y1: py - 1, y2: py + ph + 1, stroke: "#000", "stroke-width": 1.5 }, label + ": SIGTERM at " + s(p.sigterm));
      if (p.exited !== undefined) mark("circle", { cx: x(p.exited), cy: py + ph / 2, r: 2.5, fill: p.exit === "exit 0" ? "#1a7f37" : "#cf222e" }, label + ": process " + (p.exit || "exited") + " at " + s(p.exited));
      p.laneY = py;
    });
    y += h + LANE_GAP;
  });
  evictions.forEach(function (e) {
    var d = e.detail || {}, p = pods[incarnation[e.subject] || e.subject];
    if (!p) podOrder.forEach(function (k) { if (!p && (k.split("/").pop() === e.subject || k === (d.namespace || "default") + "/" + e.subject)) p = pods[k]; });
    var ey = p && p.laneY !== undefined ? p.laneY : gridTop + 4;
    mark("path", { d: "M" + x(e.t) + " " + (ey + 5) + " l-5 -8 h10 z", fill: "#c62828", stroke: "#fff", "stroke-width": 0.8 }, "eviction of " + e.subject + " at " + s(e.t));
  });
  var lanesBottom = y;

  // endpoints panel
  var svcs = Object.keys(endpoints);
  if (svcs.length) {
    y += 18;
    text(8, y + 4, "ready endpoints", "panel");
    var maxEp = 1;
    svcs.forEach(function (k) { endpoints[k].forEach(function (p) { maxEp = Math.max(maxEp, p[1]); }); });
    var EH = 70, base = y + EH;
    for (var v = 0; v <= maxEp; v++) {
      el("line", { x1: L, x2: L + plotW, y1: base - v / maxEp * EH, y2: base - v / maxEp * EH, stroke: "#eee" });
      text(L - 6, base - v / maxEp * EH + 4, String(v), "", "end");
    }
    svcs.forEach(function (k, i) {
      var pts = endpoints[k], col = color("svc:" + k), yy = function (v) { return base - v / maxEp * EH - i * 1.5; };
      var d = "M" + x(pts[0][0]) + " " + yy(pts[0][1]);
      for (var j = 1; j < pts.length; j++) d += " H" + x(pts[j][0]) + " V" + yy(pts[j][1]);
      d += " H" + x(end);
      mark("path", { d: d, fill: "none", stroke: col, "stroke-width": 2 }, k + ": " + pts.map(function (p) { return s(p[0]) + "\u2192" + p[1]; }).join(", "));
      text(L + plotW - 4, y + 12 + i * 14, k, "", "end").setAttribute("style", "fill:" + col + ";font-weight:600");
    });
    // Each iptables sync of a Service's rules (kernel data plane): a diamond under the line.
    rules.forEach(function (e) {
      var d = e.detail || {}, cx = x(e.t), cy = base + 5, col = color("svc:" + e.subject);
      var kept = (d.removed || []).map(function (r) { return r.pod_ip + " (conntrack kept " + r.kept_by_conntrack + ")"; });
      mark("path", { d: "M" + cx + " " + (cy - 4) + " l4 4 l-4 4 l-4 -4 z", fill: col },
        e.subject + ": rules rewritten at " + s(e.t) + " \u2192 " + (d.endpoints || []).join(", ") +
        (kept.length ? "; removed " + kept.join(", ") : ""));
    });
    y = base + (rules.length ? 14 : 8);
  }

  // requests panels
  var bins = {}, causes = {};
  reqs.forEach(function (r) {
    var i = Math.round(r.t / step), b = bins[i] = bins[i] || { ok: 0, failed: {}, nf: 0, svc: {} };
    b.ok += r.ok || 0;
    var rf = r.failed || {};
    Object.keys(rf).forEach(function (c) { b.failed[c] = (b.failed[c] || 0) + rf[c]; b.nf += rf[c]; causes[c] = 1; });
    b.svc[r.service] = (b.svc[r.service] || "") + " " + r.service + ": " + (r.ok || 0) + " ok" + Object.keys(rf).map(function (c) { return ", " + rf[c] + " " + c; }).join("");
  });
  var keys = Object.keys(bins).map(Number).sort(function (a, b) { return a - b; });
  if (keys.length) {
    var bw = Math.max(1, plotW * step / end - 0.5);
    var maxRate = 1, maxFail = 0;
    keys.forEach(function (i) { var b = bins[i]; maxRate = Math.max(maxRate, (b.ok + b.nf) / step); maxFail = Math.max(maxFail, b.nf); });
    y += 18;
    text(8, y + 4, "requests / s", "panel");
    var RH = 90, rb = y + RH;
    text(L - 6, y + 8, String(Math.round(maxRate)), "", "end");
    text(L - 6, rb + 4, "0", "", "end");
    keys.forEach(function (i) {
      var b = bins[i], t0 = i * step, xx = x(t0), okH = b.ok / step / maxRate * RH;
      var tip = s(t0) + ":" + Object.keys(b.svc).map(function (k) { return b.svc[k]; }).join(";");
      if (b.ok) mark("rect", { x: xx, y: rb - okH, width: bw, height: okH, fill: "#66bb6a" }, tip);
      var top = rb - okH;
      Object.keys(b.failed).forEach(function (c) {
        var fh = b.failed[c] / step / maxRate * RH;
        top -= fh;
        mark("rect", { x: xx, y: top, width: bw, height: Math.max(fh, 1.5), fill: causeColor(c) }, tip);
      });
    });
    y = rb + 10;
    // failures get their own scale: a few lost requests beside thousands must still show
    y += 14;
    text(8, y + 4, "failed requests", "panel");
    var FH = 60, fb = y + FH;
    if (maxFail === 0) {
      text(L + 6, y + FH / 2, "no failed requests", "").setAttribute("style", "fill:#1a7f37;font-weight:600");
    } else {
      text(L - 6, y + 8, String(maxFail), "", "end");
      text(L - 6, fb + 4, "0", "", "end");
      keys.forEach(function (i) {
        var b = bins[i], ftop = fb;
        Object.keys(b.failed).forEach(function (c) {
          var fh = b.failed[c] / maxFail * FH;
          ftop -= fh;
          mark("rect", { x: x(i * step), y: ftop, width: Math.max(bw, 2), height: fh, fill: causeColor(c) }, s(i * step) + ": " + b.failed[c] + " " + c);
        });
      });
      var lx = L + plotW;
      Object.keys(causes).sort().reverse().forEach(function (c) {
        var tn = text(lx, y + 4, "\u25a0 " + c, "", "end");
        tn.setAttribute("style", "fill:" + causeColor(c) + ";font-weight:600");
        lx -= 70;
      });
    }
    y = fb + 10;
  }

  // workload legend
  y += 16;
  var lx2 = L;
  Object.keys(colors).filter(function (k) { return k.indexOf("svc:") !== 0; }).forEach(function (k) {
    el("rect", { x: lx2, y: y - 9, width: 12, height: 10, fill: colors[k] });
    text(lx2 + 16, y, k, "");
    lx2 += 22 + k.length * 7;
  });
  y += 12;

  // grid lines over the lanes, drawn last so they sit under nothing important
  for (var g = tick; g < end; g += tick) {
    var gl = el("line", { x1: x(g), x2: x(g), y1: gridTop, y2: lanesBottom, stroke: "#000", "stroke-opacity": 0.06 });
    svg.insertBefore(gl, svg.firstChild.nextSibling);
  }

  svg.setAttribute("viewBox", "0 0 " + W + " " + Math.ceil(y));
  svg.setAttribute("data-marks", String(marks));
  svg.setAttribute("data-rendered", "true");
})();
</script>
</body>
</html>
"###;
