// Keyboard shortcuts of the record page (no framework; the page works without this file).
// c: correct, save and next · x: incorrect, save and next · u: unreviewed · s: save
// e: edit the answer · r: write a repair instruction · n / p: next / previous record · t: back to the table
(function () {
  "use strict";
  var form = document.getElementById("review-form");
  function go(id) { var a = document.getElementById(id); if (a) { window.location.href = a.href; } }
  function submit(verdict, next) {
    if (!form) { return; }
    if (verdict !== null) { var r = form.querySelector('input[name="is_correct"][value="' + verdict + '"]'); if (r) { r.checked = true; } }
    var b = form.querySelector(next ? 'button[value="next"]' : 'button[value="stay"]');
    if (b) { b.click(); }
  }
  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (ev.key === "Escape") { t.blur(); }
      return;
    }
    var f;
    switch (ev.key) {
      case "c": submit("true", true); break;
      case "x": submit("false", true); break;
      case "u": submit("", false); break;
      case "s": submit(null, false); break;
      case "e": f = form && form.querySelector(".answer input, .answer textarea, .answer select"); if (f) { f.focus(); ev.preventDefault(); } break;
      case "r": f = document.getElementById("instruction"); if (f) { f.focus(); ev.preventDefault(); } break;
      case "n": case "j": go("next-link"); break;
      case "p": case "k": go("prev-link"); break;
      case "t": go("table-link"); break;
      default: return;
    }
  });
})();
