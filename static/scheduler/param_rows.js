// The parameter table of a task definition: each row gets up/down arrows, and on
// save each row's hidden "place" is its place in the table, which the server
// turns into the parameter's position (the order Run now shows them in).
(function () {
  "use strict";
  var group = document.getElementById("parameters-group");
  if (!group) { return; }

  function rows() {
    return Array.prototype.filter.call(
      group.querySelectorAll("tbody tr.form-row"),
      function (tr) { return !tr.classList.contains("empty-form"); }
    );
  }

  function arrows(tr) {
    if (tr.querySelector(".param-move")) { return; }
    var cell = tr.querySelector("td.field-name") || tr.firstElementChild;
    var box = document.createElement("span");
    box.className = "param-move";
    [["up", "\u2191", "Move up"], ["down", "\u2193", "Move down"]].forEach(function (a) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "param-" + a[0];
      b.textContent = a[1];
      b.title = a[2];
      b.setAttribute("aria-label", a[2]);
      box.appendChild(b);
    });
    cell.insertBefore(box, cell.firstChild);
  }

  function number() {
    rows().forEach(function (tr, i) {
      var place = tr.querySelector('input[name$="-place"]');
      if (place) { place.value = i; }
    });
  }

  group.addEventListener("click", function (event) {
    var button = event.target.closest(".param-up, .param-down");
    if (!button) { return; }
    var tr = button.closest("tr");
    var all = rows();
    var i = all.indexOf(tr);
    if (button.classList.contains("param-up") && i > 0) {
      tr.parentNode.insertBefore(tr, all[i - 1]);
    } else if (button.classList.contains("param-down") && i < all.length - 1) {
      tr.parentNode.insertBefore(all[i + 1], tr);
    }
    number();
  });
  document.addEventListener("formset:added", function (event) {
    if (event.detail && event.detail.formsetName === "parameters") {
      arrows(event.target);
      number();
    }
  });
  rows().forEach(arrows);
  number();
  var form = group.closest("form");
  if (form) { form.addEventListener("submit", number); }
})();
