/* Small admin enhancements loaded on every admin page (templates/admin/base_site.html).
   - A "Copy" button beside each secret shown once (keys/admin/secret_once.html).
   - A tooltip with the whole text on changelist cells cut with an ellipsis (admin.css .gw-truncate) that
     have none yet. */
(function () {
  "use strict";
  function addCopyButtons() {
    document.querySelectorAll("code.issued-secret").forEach(function (code) {
      if (code.dataset.copyReady) return;
      code.dataset.copyReady = "1";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button gw-copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy the secret to the clipboard");
      button.addEventListener("click", function () {
        const text = code.textContent.trim();
        const done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 2000); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { selectText(code); });
        } else {
          selectText(code);
          try { document.execCommand("copy"); done(); } catch (e) { /* selected: the user can press Ctrl+C */ }
        }
      });
      code.insertAdjacentElement("afterend", button);
    });
  }
  function selectText(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  function titleCutCells() {
    document.querySelectorAll("#result_list .gw-truncate:not([title])").forEach(function (cell) {
      if (cell.scrollWidth > cell.clientWidth) cell.title = cell.textContent.trim();
    });
  }
  document.addEventListener("DOMContentLoaded", function () { addCopyButtons(); titleCutCells(); });
})();
