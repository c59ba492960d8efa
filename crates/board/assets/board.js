// The live board: follows the server-sent events of this page's /events twin and swaps in the
// <main> the server rendered. No framework, no build; the server does all the rendering.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("live-status");
  var url = document.body.getAttribute("data-events");
  if (!main || !status || !url || !window.EventSource) {
    return;
  }
  var source = new EventSource(url);
  function show(ok) {
    status.textContent = status.getAttribute(ok ? "data-live" : "data-lost");
    status.className = ok ? "live" : "live lost";
  }
  source.addEventListener("open", function () {
    show(true);
  });
  source.addEventListener("update", function (e) {
    main.innerHTML = e.data;
    main.setAttribute("data-updated", String(Date.now()));
    show(true);
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself; say so meanwhile.
    show(false);
  });
  window.addEventListener("beforeunload", function () {
    source.close();
  });
})();
