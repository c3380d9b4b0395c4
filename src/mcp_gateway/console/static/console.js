// The console's only script: the live audit stream and the verify-now button.
// Every value from the server is set as text (textContent), never parsed as HTML.
"use strict";

(function () {
  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : "";
  }
  var base = meta("console-base");

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function liveAudit() {
    var note = document.getElementById("live-note");
    var body = document.getElementById("record-rows");
    if (!note || !body || !window.EventSource) return;
    var after = note.getAttribute("data-live") || "0";
    var source = new EventSource(base + "/audit/stream?after=" + encodeURIComponent(after));
    source.onmessage = function (event) {
      var r = JSON.parse(event.data);
      var empty = document.getElementById("no-records");
      if (empty) empty.remove();
      var tr = document.createElement("tr");
      tr.className = "d-" + r.decision + " fresh";
      var link = document.createElement("a");
      link.href = base + "/audit/" + Number(r.seq);
      link.textContent = String(r.seq);
      cell(tr, "").appendChild(link);
      ["ts", "kind", "agent", "tool", "decision", "status", "reason", "client", "token_id"].forEach(function (k) {
        cell(tr, r[k] == null ? "" : String(r[k]));
      });
      body.insertBefore(tr, body.firstChild);
    };
    window.addEventListener("pagehide", function () { source.close(); });
  }

  function verifyButton() {
    var button = document.getElementById("verify-now");
    var status = document.getElementById("verify-status");
    var bar = document.getElementById("verify-progress");
    var problems = document.getElementById("verify-problems");
    if (!button) return;
    var url = button.getAttribute("data-url");

    function show(run) {
      var total = run.total || 0;
      bar.max = Math.max(total, 1);
      bar.value = run.phase === "done" ? bar.max : Math.min(run.done || 0, bar.max);
      var outcome = run.ok === true ? "ok" : run.ok === false ? "problems found" : "running";
      status.textContent = run.phase + ": " + outcome + ", " + (run.done || 0) + " of " + total + " records (by " + run.by + ")";
      status.setAttribute("data-state", run.phase);
      problems.textContent = "";
      (run.problems || []).forEach(function (p) {
        var li = document.createElement("li");
        li.textContent = p;
        problems.appendChild(li);
      });
    }

    function poll() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (run) {
          show(run);
          if (run.phase !== "done") setTimeout(poll, 200);
          else button.disabled = false;
        });
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": meta("csrf-token"), Accept: "application/json" },
      }).then(function (r) { return r.json(); }).then(function (run) { show(run); poll(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    liveAudit();
    verifyButton();
  });
})();
