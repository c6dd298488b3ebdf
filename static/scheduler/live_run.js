// Live run page: poll the run's status.json every few seconds while it is not
// final; append new messages, update progress and the log tails; stop when final.
(function () {
  "use strict";
  var box = document.getElementById("run-live");
  if (!box) { return; }
  var url = box.getAttribute("data-status-url");
  var final = box.getAttribute("data-final") === "1";
  var table = document.querySelector("#run-messages tbody");
  var lastId = 0;
  table.querySelectorAll("tr[data-id]").forEach(function (tr) {
    lastId = Math.max(lastId, parseInt(tr.getAttribute("data-id"), 10));
  });

  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }

  function update(data) {
    var progress = document.querySelector(".field-progress_display progress");
    if (progress) {
      progress.value = data.progress;
      progress.parentNode.lastChild.textContent = " " + data.progress + "%";
    }
    var state = document.querySelector(".field-state_display .run-state");
    if (state) { state.textContent = data.state_label; state.className = "run-state run-state-" + data.state.toLowerCase(); }
    var status = document.querySelector(".field-status_display .readonly");
    if (status) { status.textContent = (data.message || "").trim().split("\n")[0]; }
    // Times as the server writes them: submitted and started appear as they happen.
    ["submitted", "started", "finished", "wait_display", "duration_display"].forEach(function (name) {
      var el = document.querySelector(".field-" + name + " .readonly");
      var key = name.replace("_display", "");
      if (key === "submitted" || key === "started" || key === "finished") { key += "_at"; }
      if (el && data.display && data.display[key] !== undefined) { el.textContent = data.display[key]; }
    });
    var empty = table.querySelector("tr.empty");
    if (empty && data.messages.length) { empty.remove(); }
    data.messages.forEach(function (m) {
      var tr = document.createElement("tr");
      tr.className = "level-" + m.level;
      tr.setAttribute("data-id", m.id);
      var when = cell(m.when || m.time.replace("T", " ").slice(0, 19));
      when.className = "when";
      tr.appendChild(when);
      tr.appendChild(cell(m.level));
      tr.appendChild(cell(m.progress === null ? "" : m.progress + "%"));
      var text = cell(m.text);
      text.className = "text";
      tr.appendChild(text);
      table.appendChild(tr);
      lastId = Math.max(lastId, m.id);
    });
    document.getElementById("message-count").textContent = data.message_count;
    document.getElementById("stdout-tail").textContent = data.stdout_tail;
    document.getElementById("stderr-tail").textContent = data.stderr_tail;
    if (data.is_final) {
      final = true;
      // The run ended: reload once so files, times and buttons are complete.
      window.setTimeout(function () { window.location.reload(); }, 500);
    }
  }

  function poll() {
    if (final) { return; }
    fetch(url + "?after=" + lastId, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { update(data); } })
      .catch(function () { /* a missed poll is retried */ })
      .then(function () { if (!final) { window.setTimeout(poll, 2000); } });
  }
  if (!final) { window.setTimeout(poll, 1000); }
})();
