// A "Copy" button (data-copy="#id") copies the text of the element it names: the
// clipboard where the browser allows it (HTTPS or localhost), else the text is
// selected for Ctrl-C. The button says which happened.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent.trim();
    function selectIt() {
      var range = document.createRange();
      range.selectNodeContents(source);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = "Selected: press Ctrl-C";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { button.textContent = "Copied"; },
        selectIt
      );
    } else {
      selectIt();
    }
  });
})();
