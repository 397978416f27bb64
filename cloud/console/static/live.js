// Live regions: an element with data-live="<url>" is kept up to date by the server-sent
// events of that URL ("update": the region's new HTML, rendered and escaped by the server;
// "gone": the region may no longer be shown, so reload to get the page's own answer).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  if (!("EventSource" in window)) { return; }  // the page still works: reload to refresh
  document.querySelectorAll("[data-live]").forEach(function (region) {
    var source = new EventSource(region.getAttribute("data-live"));
    source.addEventListener("update", function (event) {
      region.innerHTML = event.data;
      region.setAttribute("data-live-updated", String(Date.now()));
    });
    source.addEventListener("gone", function () {
      source.close();
      window.location.reload();
    });
    window.addEventListener("pagehide", function () { source.close(); });
  });
});
