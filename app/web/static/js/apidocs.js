// Starts Swagger UI (served by the app, see app/web/apidocs.py) on the OpenAPI document.
// A file, not an inline script: the page's CSP allows scripts from this origin only.
const root = document.getElementById("swagger-ui");
window.SwaggerUIBundle({
  url: root.dataset.specUrl,
  domNode: root,
  deepLinking: true,
  validatorUrl: null, // never send the document to an outside validator
});
